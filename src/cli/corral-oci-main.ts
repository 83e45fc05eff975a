/** Entry point of the bundled corral-oci (build/corral-oci.cjs): run the CLI and exit with its status. */
import { main } from './corral-oci.ts';

main(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`corral-oci: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
