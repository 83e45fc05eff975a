/**
 * Who a container process runs as: the image's `User` ("uid", "name", "uid:gid", "name:group")
 * or the CRI run_as_user / run_as_username / run_as_group, resolved against the image rootfs's
 * /etc/passwd and /etc/group (read through resolveInRoot, so a symlink in the image cannot point
 * the lookup at a host file). Supplementary groups: the user's /etc/group memberships plus the
 * CRI supplemental_groups.
 */
import { readFileSync } from 'node:fs';
import { InvalidArgumentError, NotFoundError } from '../../errors.ts';
import { resolveInRoot } from '../../oci/runtime/resolve-in-root.ts';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}
export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

function readInRoot(rootfs: string, path: string): string {
  try {
    return readFileSync(resolveInRoot(rootfs, path), 'utf8');
  } catch {
    return '';
  }
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || line.startsWith('#') || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/' });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 3 || line.startsWith('#') || !/^\d+$/.test(f[2]!)) continue;
    out.push({ name: f[0]!, gid: Number(f[2]), members: (f[3] ?? '').split(',').map((s) => s.trim()).filter(Boolean) });
  }
  return out;
}

export interface UserRequest {
  /** The image config's User field ("" = root). */
  imageUser: string;
  runAsUser?: number | null;
  runAsUsername?: string;
  runAsGroup?: number | null;
  supplementalGroups?: number[];
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  username?: string;
  home: string;
}

const MAX_ID = 2 ** 32 - 2;

function checkId(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > MAX_ID) throw new InvalidArgumentError(`${what} ${n} is not a valid id (0..${MAX_ID})`);
  return n;
}

export function resolveUser(rootfs: string, req: UserRequest): ResolvedUser {
  const passwd = parsePasswd(readInRoot(rootfs, '/etc/passwd'));
  const groups = parseGroup(readInRoot(rootfs, '/etc/group'));
  let userPart = '';
  let groupPart: string | undefined;
  if (req.runAsUser !== undefined && req.runAsUser !== null) userPart = String(req.runAsUser);
  else if (req.runAsUsername) userPart = req.runAsUsername;
  else {
    const [u, g] = req.imageUser.split(':', 2);
    userPart = u ?? '';
    groupPart = g;
  }
  let uid = 0;
  let gid = 0;
  let username: string | undefined;
  let home = '/';
  if (userPart === '') {
    const root = passwd.find((p) => p.uid === 0);
    username = root?.name;
    home = root?.home ?? '/root';
  } else if (/^\d+$/.test(userPart)) {
    uid = checkId(Number(userPart), 'user id');
    const p = passwd.find((e) => e.uid === uid);
    gid = p?.gid ?? 0;
    username = p?.name;
    home = p?.home ?? '/';
  } else {
    const p = passwd.find((e) => e.name === userPart);
    if (!p) throw new NotFoundError(`user "${userPart}" is not in the image's /etc/passwd; use a numeric uid or add the user to the image`);
    uid = p.uid;
    gid = p.gid;
    username = p.name;
    home = p.home;
  }
  if (req.runAsGroup !== undefined && req.runAsGroup !== null) gid = checkId(req.runAsGroup, 'group id');
  else if (groupPart !== undefined && groupPart !== '') {
    if (/^\d+$/.test(groupPart)) gid = checkId(Number(groupPart), 'group id');
    else {
      const g = groups.find((e) => e.name === groupPart);
      if (!g) throw new NotFoundError(`group "${groupPart}" is not in the image's /etc/group`);
      gid = g.gid;
    }
  }
  const extra = new Set<number>();
  if (username) for (const g of groups) if (g.members.includes(username) && g.gid !== gid) extra.add(g.gid);
  for (const g of req.supplementalGroups ?? []) extra.add(checkId(g, 'supplemental group'));
  extra.delete(gid);
  return { uid, gid, additionalGids: [...extra].sort((a, b) => a - b), username, home };
}
