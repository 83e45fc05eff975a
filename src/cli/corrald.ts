/**
 * corrald: the CRI daemon.
 *   corrald [--config FILE] [flags]     serve until SIGTERM/SIGINT
 *   corrald --version
 */
import { CorralError } from '../errors.ts';
import { USAGE, parseArgs, resolveConfig } from '../cri/config.ts';
import { createLogger } from '../cri/log.ts';
import { Daemon } from '../cri/daemon.ts';
import { corralVersion, RUNTIME_NAME } from '../cri/runtime-info.ts';
import { join } from 'node:path';
import { ImageService } from '../image/service.ts';
import { createImageServiceImpl, imageServiceOptions } from '../cri/image/index.ts';
import { CriRuntimeService } from '../cri/runtime/service.ts';
import { OciStreamingBackend } from '../cri/streaming-backend/backend.ts';

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (args.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (args.version) {
    process.stdout.write(`corrald ${corralVersion()} (${RUNTIME_NAME}, CRI runtime.v1)\n`);
    return 0;
  }
  const config = resolveConfig(args);
  const log = createLogger({ level: config.log_level, base: { component: 'corrald' } });
  // One image store for both services: the RuntimeService reads image configs and snapshots from it.
  const images = await ImageService.open({ ...imageServiceOptions(config), root: join(config.root_dir, 'images') });
  let runtime: CriRuntimeService | null = null;
  const metricsRef: { set?: (n: number) => void } = {};
  runtime = new CriRuntimeService({
    config, log, images,
    network: config.cni.default_network ? { bridge: config.cni.default_bridge, subnet: config.cni.default_subnet } : undefined,
    cgroupRoot: config.cgroup_parent, conmonPath: config.conmon_path,
    onRunningCount: (n) => metricsRef.set?.(n),
  });
  const rt = runtime;
  const pullBytes: { add?: (n: number) => void } = {};
  const image = createImageServiceImpl(images, { log, onPullBytes: (n) => pullBytes.add?.(n) });
  const streamingBackend = new OciStreamingBackend({ targets: rt.streamTargets(), workDir: join(config.state_dir, 'streams'), log: log.child({ component: 'streaming' }) });
  const daemon = new Daemon({ config, log, runtime: rt.handlers(), image, streamingBackend, ...(config.cni.default_network ? { networkStatus: () => rt.networkStatus() } : {}) });
  rt.setEvents(daemon.events);
  metricsRef.set = (n) => daemon.metrics.runningContainers.set(n);
  pullBytes.add = (n) => daemon.metrics.pullBytes.inc(undefined, n);
  await rt.recover();
  await daemon.start();
  log.info('corrald ready', { pid: process.pid, version: corralVersion(), socket: config.socket, metrics: daemon.metricsUrl, stream: daemon.streaming?.url ?? null });

  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      log.info('shutting down', { signal: sig });
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  await daemon.stop();
  await rt.close();
  images.close();
  log.info('stopped');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const code = err instanceof CorralError ? err.code : 'INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level: 'error', msg: 'corrald failed', code, error: message }) + '\n');
    process.exit(err instanceof CorralError && err.code === 'INVALID_ARGUMENT' ? 2 : 1);
  },
);
