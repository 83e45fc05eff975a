/**
 * The RuntimeService calls corrald answers by itself: Version, Status, RuntimeConfig,
 * UpdateRuntimeConfig and GetContainerEvents.
 */
import { readFileSync, readdirSync, accessSync, constants as fsConstants } from 'node:fs';
import { InvalidArgumentError } from '../errors.ts';
import { repoPath } from '../layout.ts';
import type { CorraldConfig } from './config.ts';
import type { EventBus } from './events.ts';
import type { RuntimeServiceImpl } from './server.ts';
import type { RuntimeCondition } from './types.gen.ts';

/** The CRI API version string runtimes report in VersionResponse.version. */
export const KUBE_RUNTIME_API_VERSION = '0.1.0';
export const RUNTIME_NAME = 'corral';

export function corralVersion(): string {
  const pkg = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as { version?: string };
  return pkg.version ?? '0.0.0';
}

export interface ConditionReport {
  ready: boolean;
  reason?: string;
  message?: string;
}

export interface RuntimeInfoOptions {
  config: CorraldConfig;
  events: EventBus;
  /** Override the RuntimeReady check (default: the default handler's binary is executable). */
  runtimeStatus?: () => Promise<ConditionReport> | ConditionReport;
  /** Override the NetworkReady check (default: a CNI config exists in cni.conf_dir). */
  networkStatus?: () => Promise<ConditionReport> | ConditionReport;
  /** Told when the kubelet hands over a pod CIDR (UpdateRuntimeConfig). */
  onPodCidr?: (cidr: string) => void;
}

export function defaultRuntimeStatus(config: CorraldConfig): ConditionReport {
  const h = config.runtime_handlers[config.default_runtime_handler];
  if (!h) return { ready: false, reason: 'NoDefaultRuntimeHandler', message: `runtime handler ${config.default_runtime_handler} is not configured` };
  try {
    accessSync(h.path, fsConstants.X_OK);
    return { ready: true };
  } catch {
    return { ready: false, reason: 'RuntimeHandlerMissing', message: `runtime handler ${config.default_runtime_handler}: ${h.path} is not an executable file (run npm run setup)` };
  }
}

export function defaultNetworkStatus(config: CorraldConfig): ConditionReport {
  let names: string[] = [];
  try {
    names = readdirSync(config.cni.conf_dir);
  } catch {}
  if (names.some((n) => /\.(conf|conflist|json)$/.test(n))) return { ready: true };
  return { ready: false, reason: 'NetworkPluginNotReady', message: `no CNI network config (*.conf, *.conflist, *.json) in ${config.cni.conf_dir}` };
}

const CIDR4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;
const CIDR6 = /^[0-9a-fA-F:]+\/(\d{1,3})$/;

/** Accepts "10.88.0.0/16", "fd00::/64", or a comma-separated dual-stack pair. */
export function validatePodCidr(text: string): string {
  for (const part of text.split(',').map((s) => s.trim())) {
    const m4 = CIDR4.exec(part);
    const ok4 = m4 && m4.slice(1, 5).every((o) => Number(o) <= 255) && Number(m4[5]) <= 32;
    const m6 = CIDR6.exec(part);
    const ok6 = m6 && part.includes(':') && Number(m6[1]) <= 128;
    if (!ok4 && !ok6) throw new InvalidArgumentError(`UpdateRuntimeConfig: pod_cidr ${JSON.stringify(text)} is not a CIDR like 10.88.0.0/16`);
  }
  return text;
}

export class RuntimeInfo {
  podCidr = '';
  private readonly options: RuntimeInfoOptions;
  private readonly version = corralVersion();

  constructor(options: RuntimeInfoOptions) {
    this.options = options;
  }

  handlers(): Partial<RuntimeServiceImpl> {
    const o = this.options;
    return {
      Version: () => ({
        version: KUBE_RUNTIME_API_VERSION,
        runtime_name: RUNTIME_NAME,
        runtime_version: this.version,
        runtime_api_version: 'v1',
      }),
      Status: async (req) => {
        const runtime = await (o.runtimeStatus ?? (() => defaultRuntimeStatus(o.config)))();
        const network = await (o.networkStatus ?? (() => defaultNetworkStatus(o.config)))();
        const cond = (type: string, r: ConditionReport): RuntimeCondition => ({ type, status: r.ready, reason: r.ready ? '' : (r.reason ?? 'NotReady'), message: r.ready ? '' : (r.message ?? '') });
        const info: Record<string, string> = {};
        if (req.verbose) {
          info.config = JSON.stringify(o.config);
          info.podCIDR = JSON.stringify(this.podCidr);
          info.version = JSON.stringify({ runtimeName: RUNTIME_NAME, runtimeVersion: this.version, runtimeApiVersion: 'v1' });
          info.eventSubscribers = JSON.stringify(o.events.subscriberCount);
        }
        return { status: { conditions: [cond('RuntimeReady', runtime), cond('NetworkReady', network)] }, info };
      },
      RuntimeConfig: () => ({ linux: { cgroup_driver: 'CGROUPFS' } }),
      UpdateRuntimeConfig: (req) => {
        const cidr = req.runtime_config?.network_config?.pod_cidr ?? '';
        if (cidr === '') return {}; // the kubelet sends empty updates; nothing to change
        this.podCidr = validatePodCidr(cidr);
        o.onPodCidr?.(this.podCidr);
        return {};
      },
      GetContainerEvents: (_req, ctx) => {
        const sub = o.events.subscribe();
        ctx.signal.addEventListener('abort', () => sub.close(), { once: true });
        return sub;
      },
    };
  }
}
