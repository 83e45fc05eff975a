/**
 * Runtime-service settings that src/cri/config.ts does not know yet (to be folded into the
 * TOML config by the lead): the built-in pod network and the default cgroup parent.
 *   --pod-bridge NAME     bridge of the built-in network (default corral0)
 *   --pod-subnet CIDR     its IPv4 subnet (default 10.90.0.0/16)
 *   --cgroup-root PATH    cgroup parent of pods that name none (default /corral)
 *   --conmon PATH         conmon binary (default /usr/bin/conmon)
 * They are taken out of argv before the config parser sees it.
 */
import { InvalidArgumentError } from '../../errors.ts';

export interface RuntimeFlags {
  podBridge?: string;
  podSubnet?: string;
  cgroupRoot?: string;
  conmon?: string;
}

const FLAGS: Record<string, keyof RuntimeFlags> = { '--pod-bridge': 'podBridge', '--pod-subnet': 'podSubnet', '--cgroup-root': 'cgroupRoot', '--conmon': 'conmon' };

export function extractRuntimeFlags(argv: string[]): { flags: RuntimeFlags; rest: string[] } {
  const flags: RuntimeFlags = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const key = FLAGS[name];
    if (!key) {
      rest.push(a);
      continue;
    }
    const v = eq > 0 && a.startsWith('--') ? a.slice(eq + 1) : argv[++i];
    if (v === undefined || v === '') throw new InvalidArgumentError(`${name} needs a value`);
    if ((key === 'cgroupRoot' || key === 'conmon') && !v.startsWith('/')) throw new InvalidArgumentError(`${name} must be an absolute path, got ${JSON.stringify(v)}`);
    flags[key] = v;
  }
  return { flags, rest };
}
