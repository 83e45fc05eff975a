/**
 * corrald assembled: config → logger → metrics → streaming server → CRI gRPC server.
 * The lead's container/image layers plug in through `runtime`, `image` and `streamingBackend`.
 */
import { CriMetrics, startMetricsServer } from './metrics.ts';
import { CriServer, type ImageServiceImpl, type RuntimeServiceImpl } from './server.ts';
import { EventBus } from './events.ts';
import { RuntimeInfo, type RuntimeInfoOptions } from './runtime-info.ts';
import { StreamingServer } from './streaming/server.ts';
import type { StreamingBackend } from './streaming/backend.ts';
import type { CorraldConfig } from './config.ts';
import type { Logger } from './log.ts';

export interface DaemonOptions {
  config: CorraldConfig;
  log: Logger;
  runtime?: Partial<RuntimeServiceImpl>;
  image?: Partial<ImageServiceImpl>;
  /** When given, Exec/Attach/PortForward hand out streaming URLs served through it. */
  streamingBackend?: StreamingBackend;
  runtimeStatus?: RuntimeInfoOptions['runtimeStatus'];
  networkStatus?: RuntimeInfoOptions['networkStatus'];
}

export class Daemon {
  readonly config: CorraldConfig;
  readonly events = new EventBus();
  readonly metrics = new CriMetrics();
  readonly info: RuntimeInfo;
  readonly cri: CriServer;
  streaming: StreamingServer | null = null;
  metricsUrl: string | null = null;
  private closeMetrics: (() => Promise<void>) | null = null;
  private readonly options: DaemonOptions;

  constructor(options: DaemonOptions) {
    this.options = options;
    this.config = options.config;
    this.info = new RuntimeInfo({ config: options.config, events: this.events, runtimeStatus: options.runtimeStatus, networkStatus: options.networkStatus });
    this.cri = new CriServer({ socketPath: options.config.socket, log: options.log, metrics: this.metrics });
  }

  async start(): Promise<this> {
    const { config, log } = this.options;
    const streamingRpcs: Partial<RuntimeServiceImpl> = {};
    const backend = this.options.streamingBackend;
    if (backend) {
      this.streaming = await StreamingServer.start({
        address: config.stream.address,
        port: config.stream.port,
        baseUrl: config.stream.base_url || undefined,
        tokenTtlMs: config.stream.token_ttl_seconds * 1000,
        backend,
        log: log.child({ component: 'streaming' }),
      });
      const s = this.streaming;
      streamingRpcs.Exec = async (req) => {
        await backend.checkContainer?.(req.container_id);
        return s.getExec(req);
      };
      streamingRpcs.Attach = async (req) => {
        await backend.checkContainer?.(req.container_id);
        return s.getAttach(req);
      };
      streamingRpcs.PortForward = async (req) => {
        await backend.checkSandbox?.(req.pod_sandbox_id);
        return s.getPortForward(req);
      };
      log.info('streaming server listening', { url: s.url });
    }
    try {
      this.cri.use({ runtime: this.info.handlers() });
      this.cri.use({ runtime: streamingRpcs });
      this.cri.use({ runtime: this.options.runtime, image: this.options.image });
      if (config.metrics.address) {
        const m = await startMetricsServer(config.metrics.address, this.metrics.registry);
        this.metricsUrl = m.url;
        this.closeMetrics = m.close;
        log.info('metrics endpoint listening', { url: m.url });
      }
      await this.cri.start();
    } catch (err) {
      await this.stop();
      throw err;
    }
    return this;
  }

  async stop(): Promise<void> {
    await this.cri.stop();
    await this.streaming?.stop();
    this.streaming = null;
    await this.closeMetrics?.();
    this.closeMetrics = null;
  }
}
