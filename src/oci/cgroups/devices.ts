/**
 * Device-cgroup rules: normalization of OCI `linux.resources.devices`, the cgroup v1
 * kernel semantics (an emulator of the devices controller's allow/deny lists, used
 * to compute the minimal writes from the current devices.list to the target, as
 * runc does), and the default device list runtimes conventionally allow.
 *
 * Meaning of a rule list (both v1 and v2): rules apply in order, later rules
 * override earlier ones; the starting point is "deny everything". A rule
 * `{allow, type:'a'}` with wildcard major/minor and access "rwm" resets the policy to
 * allow-all / deny-all. A type 'a' rule that is narrower is split into a 'b' and a
 * 'c' rule (the v1 kernel would otherwise read any "a" rule as "everything").
 *
 * v2 (eBPF, v2-devices.ts) implements exactly this. v1 can only approximate it, as in
 * runc: the kernel keeps exceptions keyed by type/major/minor, so a later deny of
 * "c 1:3" does not carve 1:3 out of an earlier allow of "c *:*".
 */
import { SpecError } from '../../errors.ts';
import type { LinuxDeviceCgroup } from './types.ts';

export interface DeviceRule {
  allow: boolean;
  type: 'a' | 'b' | 'c';
  /** -1 = any */
  major: number;
  /** -1 = any */
  minor: number;
  /** Non-empty subset of "rwm", canonical order. */
  access: string;
}

function canonicalAccess(a: string | undefined, where: string): string {
  if (a === undefined || a === '') return 'rwm';
  for (const ch of a) if (!'rwm'.includes(ch)) throw new SpecError(`${where}.access`, `invalid access ${JSON.stringify(a)}: use a combination of r, w, m`);
  return ['r', 'w', 'm'].filter((c) => a.includes(c)).join('');
}

function devNumber(v: number | null | undefined, where: string): number {
  if (v === undefined || v === null || v === -1) return -1;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new SpecError(where, `invalid device number ${v}`);
  return v;
}

export function isResetRule(r: DeviceRule): boolean {
  return r.type === 'a' && r.major === -1 && r.minor === -1 && r.access === 'rwm';
}

export function normalizeDeviceRules(rules: LinuxDeviceCgroup[], where = 'linux.resources.devices'): DeviceRule[] {
  const out: DeviceRule[] = [];
  rules.forEach((r, i) => {
    const w = `${where}[${i}]`;
    if (typeof r.allow !== 'boolean') throw new SpecError(`${w}.allow`, 'must be a boolean');
    const type = r.type === undefined || r.type === '' ? 'a' : r.type;
    if (type !== 'a' && type !== 'b' && type !== 'c') throw new SpecError(`${w}.type`, `invalid device type ${JSON.stringify(r.type)}: use a, b or c`);
    const rule: DeviceRule = {
      allow: r.allow,
      type,
      major: devNumber(r.major, `${w}.major`),
      minor: devNumber(r.minor, `${w}.minor`),
      access: canonicalAccess(r.access, w),
    };
    if (rule.type === 'a' && !isResetRule(rule)) {
      out.push({ ...rule, type: 'b' }, { ...rule, type: 'c' });
    } else out.push(rule);
  });
  return out;
}

/** "c 1:3 rwm", "a *:* rwm" (the devices.allow / devices.deny syntax). */
export function ruleToV1String(r: { type: string; major: number; minor: number; access: string }): string {
  const n = (x: number): string => (x === -1 ? '*' : String(x));
  return `${r.type} ${n(r.major)}:${n(r.minor)} ${r.access}`;
}

function keyOf(r: { type: string; major: number; minor: number }): string {
  return ruleToV1String({ ...r, access: '' }).trimEnd();
}

function bits(a: string): number {
  return (a.includes('r') ? 1 : 0) | (a.includes('w') ? 2 : 0) | (a.includes('m') ? 4 : 0);
}
function accessOf(b: number): string {
  return (b & 1 ? 'r' : '') + (b & 2 ? 'w' : '') + (b & 4 ? 'm' : '');
}

/** State of a v1 devices cgroup: default behavior plus exceptions keyed by type/major/minor. */
export class DevicesState {
  defaultAllow: boolean;
  /** key "c 1:3" → access bits r=1 w=2 m=4 */
  readonly exceptions = new Map<string, { type: 'b' | 'c'; major: number; minor: number; bits: number }>();

  constructor(defaultAllow: boolean) {
    this.defaultAllow = defaultAllow;
  }

  /** Apply one rule as the kernel does when it is written to devices.allow/deny. */
  apply(r: DeviceRule): void {
    if (r.type === 'a') {
      this.defaultAllow = r.allow;
      this.exceptions.clear();
      return;
    }
    const k = keyOf(r);
    const b = bits(r.access);
    const cur = this.exceptions.get(k);
    if (r.allow !== this.defaultAllow) {
      if (cur) cur.bits |= b;
      else this.exceptions.set(k, { type: r.type, major: r.major, minor: r.minor, bits: b });
    } else if (cur) {
      cur.bits &= ~b;
      if (cur.bits === 0) this.exceptions.delete(k);
    }
  }

  static fromRules(rules: DeviceRule[]): DevicesState {
    const s = new DevicesState(false);
    for (const r of rules) s.apply(r);
    return s;
  }

  /**
   * Parse devices.list. "a *:* rwm" means default-allow; the kernel does not list a
   * deny-list's exceptions, so they are unknown (treated as none).
   */
  static fromList(text: string): DevicesState {
    const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
    if (lines.some((l) => l.startsWith('a '))) return new DevicesState(true);
    const s = new DevicesState(false);
    for (const l of lines) {
      const m = /^([bc]) (\*|\d+):(\*|\d+) ([rwm]+)$/.exec(l);
      if (!m) continue;
      s.apply({
        allow: true,
        type: m[1] as 'b' | 'c',
        major: m[2] === '*' ? -1 : Number(m[2]),
        minor: m[3] === '*' ? -1 : Number(m[3]),
        access: m[4],
      });
    }
    return s;
  }

  equals(o: DevicesState): boolean {
    if (this.defaultAllow !== o.defaultAllow || this.exceptions.size !== o.exceptions.size) return false;
    for (const [k, v] of this.exceptions) if (o.exceptions.get(k)?.bits !== v.bits) return false;
    return true;
  }

  /** Sorted "c 1:3 rwm" lines of the exceptions. */
  exceptionLines(): string[] {
    return [...this.exceptions.values()].map((e) => ruleToV1String({ ...e, access: accessOf(e.bits) })).sort();
  }
}

export interface DevicesWrite {
  file: 'devices.allow' | 'devices.deny';
  value: string;
}

/**
 * Writes that take a v1 devices cgroup from `current` to `target`. Between two
 * allow-lists only the differences are written (no window in which the container
 * loses access to devices it keeps, and it works when the cgroup has children);
 * otherwise the policy is reset with "a" and the exceptions are written.
 */
export function devicesTransition(current: DevicesState, target: DevicesState): DevicesWrite[] {
  const out: DevicesWrite[] = [];
  const exFile = (allowDefault: boolean): DevicesWrite['file'] => (allowDefault ? 'devices.deny' : 'devices.allow');
  if (current.defaultAllow || target.defaultAllow) {
    if (current.defaultAllow && target.defaultAllow && target.exceptions.size === 0 && current.exceptions.size === 0) return out;
    out.push({ file: target.defaultAllow ? 'devices.allow' : 'devices.deny', value: 'a' });
    for (const e of target.exceptions.values()) {
      out.push({ file: exFile(target.defaultAllow), value: ruleToV1String({ ...e, access: accessOf(e.bits) }) });
    }
    return out;
  }
  for (const [k, e] of current.exceptions) {
    const drop = e.bits & ~(target.exceptions.get(k)?.bits ?? 0);
    if (drop) out.push({ file: 'devices.deny', value: ruleToV1String({ ...e, access: accessOf(drop) }) });
  }
  for (const [k, e] of target.exceptions) {
    const add = e.bits & ~(current.exceptions.get(k)?.bits ?? 0);
    if (add) out.push({ file: 'devices.allow', value: ruleToV1String({ ...e, access: accessOf(add) }) });
  }
  return out;
}

/**
 * The devices runtimes conventionally allow on top of the spec's list (runc appends
 * these): mknod of any char/block device, /dev/null, zero, full, random, urandom,
 * tty, console, ptmx, pts/*, and /dev/net/tun. Not applied automatically: the spec
 * layer decides whether to append them.
 */
export const DEFAULT_ALLOWED_DEVICES: readonly LinuxDeviceCgroup[] = [
  { allow: true, type: 'c', major: -1, minor: -1, access: 'm' },
  { allow: true, type: 'b', major: -1, minor: -1, access: 'm' },
  { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 7, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 8, access: 'rwm' },
  { allow: true, type: 'c', major: 1, minor: 9, access: 'rwm' },
  { allow: true, type: 'c', major: 5, minor: 0, access: 'rwm' },
  { allow: true, type: 'c', major: 5, minor: 1, access: 'rwm' },
  { allow: true, type: 'c', major: 5, minor: 2, access: 'rwm' },
  { allow: true, type: 'c', major: 136, minor: -1, access: 'rwm' },
  { allow: true, type: 'c', major: 10, minor: 200, access: 'rwm' },
];
