/**
 * Worker-thread entry of the layer unpacker (see layer.ts): applies one layer per message
 * with the in-thread implementation and answers with the result or a serialized error.
 */
import { parentPort } from 'node:worker_threads';
import { unpackLayerFileHere, type UnpackJob } from './layer.ts';

if (!parentPort) throw new Error('unpack worker must run as a worker thread');
const port = parentPort;
port.on('message', (job: UnpackJob & { id: number }) => {
  unpackLayerFileHere(job.blobPath, job.root, job.opts).then(
    (result) => port.postMessage({ id: job.id, result }),
    (e: unknown) => {
      const err = e as { name?: string; message?: string; code?: unknown; errno?: unknown; stack?: string };
      port.postMessage({
        id: job.id,
        error: {
          name: (e as object)?.constructor?.name ?? err?.name ?? 'Error',
          message: String(err?.message ?? e),
          code: typeof err?.code === 'string' ? err.code : undefined,
          errno: typeof err?.errno === 'string' ? err.errno : undefined,
          stack: err?.stack,
        },
      });
    },
  );
});
