/**
 * Entry point of the bundled corral-oci (build/corral-oci.cjs):
 *   corral-oci.cjs ARGS...            run the CLI once and exit with its status (the client's fallback)
 *   corral-oci.cjs --server SOCKET    serve CLI requests of bin/corral-oci (src/cli/oci-server.ts)
 */
import { main } from './corral-oci.ts';
import { serve } from './oci-server.ts';

const argv = process.argv.slice(2);
if (argv[0] === '--server' && argv.length === 2) {
  serve(argv[1]).catch((e: unknown) => {
    process.stderr.write(`corral-oci server: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
} else {
  main(argv).then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`corral-oci: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
}
