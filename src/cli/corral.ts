/**
 * `corral`: the image command line for people, with docker's habits.
 *
 *   corral [global flags] pull IMAGE | images | inspect IMAGE… | rmi IMAGE… | tag SRC DST
 *          | import FILE|DIR|- | export [-o FILE] IMAGE… | push IMAGE [TARGET]
 *          | system df | image prune [-a] | image ls|rm|inspect|pull|push|tag|import|export|prune
 *
 * Global flags (anywhere on the line): --root DIR (image store, default /var/lib/corral),
 * --hosts-dir DIR (containerd hosts.toml layout: <dir>/<registry>/hosts.toml, certificates),
 * --insecure-registry HOST (repeatable: plain HTTP), --snapshotter overlayfs|native,
 * --platform os/arch[/variant], --authfile FILE (docker config.json; default ~/.docker/config.json).
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { FailedPreconditionError, InvalidArgumentError } from '../errors.ts';
import { parseArgs, bool, list, str, usageLines, type FlagSpec, type Parsed } from './args.ts';
import { ImageService, type ImageInfo } from '../image/service.ts';
import { familiarName, formatReference, parseReference } from '../image/reference.ts';
import { parsePlatform } from '../image/media.ts';
import type { AuthConfig } from '../image/registry/auth.ts';
import { closeIdleConnections } from '../image/registry/transport.ts';
import { exportImages, exportLayoutDir, importImages, type ExportFormat } from '../image/archive/index.ts';
import { PullProgress } from '../image/cli/progress.ts';
import { humanAge, humanSize, shortId, table } from '../image/cli/format.ts';
import { explain, type ExplainContext } from '../image/cli/errors.ts';

const GLOBAL: FlagSpec[] = [
  { name: 'root', type: 'string', help: 'image store directory (default /var/lib/corral)' },
  { name: 'hosts-dir', type: 'string', help: 'registry hosts config: <dir>/<registry>/hosts.toml and certificates' },
  { name: 'insecure-registry', type: 'list', help: 'registry (host[:port]) reached over plain HTTP; repeatable' },
  { name: 'snapshotter', type: 'string', help: 'overlayfs or native (default: what the store uses, else overlayfs when it works)' },
  { name: 'platform', type: 'string', help: 'os/arch[/variant] to pull and import (default: this machine)' },
  { name: 'authfile', type: 'string', help: 'docker config.json with registry credentials (default ~/.docker/config.json)' },
  { name: 'help', alias: ['h'], type: 'bool' },
];

interface Command {
  flags: FlagSpec[];
  usage: string;
  run(svc: ImageService, p: Parsed, g: Globals): Promise<number>;
}

interface Globals {
  root: string;
  out: NodeJS.WriteStream;
  err: NodeJS.WriteStream;
  /** The context a failure is explained in (set by the command as it goes). */
  ctx: ExplainContext;
}

/** A mistake on the command line (exit status 2). */
class UsageError extends InvalidArgumentError {}

function parseCreds(s: string | undefined): AuthConfig | undefined {
  if (s === undefined) return undefined;
  const i = s.indexOf(':');
  if (i <= 0) throw new UsageError('--creds must be USER:PASSWORD');
  return { username: s.slice(0, i), password: s.slice(i + 1) };
}

function registryOf(ref: string): string | undefined {
  try {
    return parseReference(ref).domain;
  } catch {
    return undefined;
  }
}

function need(p: Parsed, n: number, usage: string): void {
  if (p.positional.length < n) throw new UsageError(`"${usage}" needs ${n === 1 ? 'an argument' : `${n} arguments`}`);
}

/** REPOSITORY / TAG rows of an image: one per tag; `<none>` when only digests name it. */
function rows(i: ImageInfo): Array<{ repo: string; tag: string; digest: string }> {
  const out: Array<{ repo: string; tag: string; digest: string }> = [];
  const tagged = new Set<string>();
  for (const n of i.names) {
    const r = parseReference(n, { defaultTag: false });
    const repo = familiarName({ domain: r.domain, path: r.path });
    if (r.tag !== undefined) {
      out.push({ repo, tag: r.tag, digest: i.digest });
      tagged.add(repo);
    }
  }
  for (const n of i.names) {
    const r = parseReference(n, { defaultTag: false });
    const repo = familiarName({ domain: r.domain, path: r.path });
    if (r.tag === undefined && !tagged.has(repo)) {
      out.push({ repo, tag: '<none>', digest: i.digest });
      tagged.add(repo);
    }
  }
  return out;
}

/** Each image once, by the name the user will recognize (records are per name). */
function uniqueImages(svc: ImageService): ImageInfo[] {
  const seen = new Map<string, ImageInfo>();
  for (const i of svc.list()) if (!seen.has(i.digest)) seen.set(i.digest, i);
  return [...seen.values()];
}

const commands: Record<string, Command> = {
  pull: {
    usage: 'corral pull [--quiet] [--creds USER:PASSWORD] IMAGE',
    flags: [
      { name: 'quiet', alias: ['q'], type: 'bool', help: 'print only the image name' },
      { name: 'creds', type: 'string', help: 'USER:PASSWORD for the registry' },
    ],
    async run(svc, p, g) {
      need(p, 1, this.usage);
      const ref = p.positional[0]!;
      const name = formatReference(parseReference(ref));
      g.ctx = { ...g.ctx, action: `pull ${ref}`, registry: registryOf(ref), remote: true, image: ref };
      const quiet = bool(p, 'quiet');
      const prog = new PullProgress(g.err, { quiet });
      let info: ImageInfo;
      try {
        info = await svc.pull(ref, { auth: parseCreds(str(p, 'creds')), onProgress: prog.event });
      } finally {
        prog.finish();
      }
      const t = prog.finish();
      if (!quiet) {
        const fresh = t.layers - t.cached;
        const rate = t.ms > 0 ? ` (${humanSize(Math.round((t.downloadedBytes * 1000) / t.ms))}/s)` : '';
        g.out.write(`Digest: ${info.digest}\n`);
        g.out.write(`Image ID: ${info.id}\n`);
        g.out.write(`Status: ${fresh === 0 && t.downloadedBytes === 0 ? 'Image is up to date' : 'Downloaded newer image'} for ${familiarName(parseReference(ref))}\n`);
        g.out.write(`Pulled ${t.layers} layer(s) (${fresh} new, ${t.cached} already present), ${humanSize(t.downloadedBytes)} downloaded in ${(t.ms / 1000).toFixed(1)}s${rate}, ${humanSize(info.size)} compressed\n`);
      }
      g.out.write(`${name}\n`);
      return 0;
    },
  },

  images: {
    usage: 'corral images [--quiet] [--digests] [--no-trunc] [--format table|json] [REPOSITORY[:TAG]]',
    flags: [
      { name: 'quiet', alias: ['q'], type: 'bool', help: 'only image IDs' },
      { name: 'digests', type: 'bool', help: 'show repo digests' },
      { name: 'no-trunc', type: 'bool', help: 'full IDs' },
      { name: 'format', type: 'string', help: 'table (default) or json (one object per line)' },
      { name: 'all', alias: ['a'], type: 'bool', help: 'accepted for compatibility' },
    ],
    async run(svc, p, g) {
      const filter = p.positional[0];
      let images = uniqueImages(svc);
      if (filter) {
        const f = parseReference(filter, { defaultTag: false });
        images = images.filter((i) => i.names.some((n) => {
          const r = parseReference(n, { defaultTag: false });
          return r.domain === f.domain && r.path === f.path && (f.tag === undefined || r.tag === f.tag);
        }));
      }
      images.sort((a, b) => (b.config.created ?? '').localeCompare(a.config.created ?? '') || a.name.localeCompare(b.name));
      const format = str(p, 'format') ?? 'table';
      const full = bool(p, 'no-trunc');
      if (format === 'json') {
        for (const i of images) {
          g.out.write(JSON.stringify({
            ID: i.id, RepoTags: i.names.filter((n) => !n.includes('@')), RepoDigests: i.names.filter((n) => n.includes('@')),
            Digest: i.digest, Size: i.size, CreatedAt: i.config.created ?? null, Platform: i.platform, Unpacked: i.unpacked,
          }) + '\n');
        }
        return 0;
      }
      if (format !== 'table') throw new UsageError(`--format must be "table" or "json", not "${format}"`);
      if (bool(p, 'quiet')) {
        for (const id of new Set(images.map((i) => shortId(i.id, full)))) g.out.write(id + '\n');
        return 0;
      }
      const digests = bool(p, 'digests');
      const header = ['REPOSITORY', 'TAG', ...(digests ? ['DIGEST'] : []), 'IMAGE ID', 'CREATED', 'SIZE'];
      const out: string[][] = [];
      for (const i of images) {
        const created = i.config.created ? new Date(i.config.created) : undefined;
        for (const r of rows(i)) {
          if (filter) {
            const f = parseReference(filter, { defaultTag: false });
            if (familiarName({ domain: f.domain, path: f.path }) !== r.repo || (f.tag !== undefined && f.tag !== r.tag)) continue;
          }
          out.push([r.repo, r.tag, ...(digests ? [r.digest] : []), shortId(i.id, full), humanAge(created), humanSize(i.size)]);
        }
      }
      g.out.write(table(header, out));
      return 0;
    },
  },

  inspect: {
    usage: 'corral inspect IMAGE…',
    flags: [],
    async run(svc, p, g) {
      need(p, 1, this.usage);
      const out: unknown[] = [];
      for (const ref of p.positional) {
        g.ctx = { ...g.ctx, action: `inspect ${ref}`, image: ref, remote: false };
        const i = svc.get(ref);
        out.push({
          Id: i.id, RepoTags: i.names.filter((n) => !n.includes('@')), RepoDigests: i.names.filter((n) => n.includes('@')),
          Digest: i.digest, MediaType: i.mediaType, ManifestDigest: i.manifestDigest, Platform: i.platform,
          Created: i.config.created ?? null, Size: i.size, Config: i.config.config ?? {},
          RootFS: { Type: 'layers', Layers: i.diffIds }, Layers: i.layers, ChainID: i.chainId, Unpacked: i.unpacked,
          Snapshotter: svc.snapshotter.name, History: i.config.history ?? [],
        });
      }
      g.out.write(JSON.stringify(out, null, 2) + '\n');
      return 0;
    },
  },

  rmi: {
    usage: 'corral rmi [--force] IMAGE…',
    flags: [
      { name: 'force', alias: ['f'], type: 'bool', help: 'remove every name of an image given by ID' },
      { name: 'no-prune', type: 'bool', help: 'do not collect garbage afterwards' },
    ],
    async run(svc, p, g) {
      need(p, 1, this.usage);
      let failed = 0;
      for (const ref of p.positional) {
        g.ctx = { ...g.ctx, action: `remove ${ref}`, image: ref, remote: false };
        try {
          const info = svc.get(ref);
          const byName = (() => {
            try {
              return svc.db.getImage(formatReference(parseReference(ref))) !== undefined;
            } catch {
              return false;
            }
          })();
          const repos = new Set(info.names.map((n) => n.replace(/[:@][^/]*$/, '')));
          if (!byName && repos.size > 1 && !bool(p, 'force')) {
            throw new FailedPreconditionError(`image ${shortId(info.id)} is referenced in ${repos.size} repositories (${[...repos].map((r) => familiarName(parseReference(r))).join(', ')}); remove them by name, or use --force`);
          }
          const res = await svc.remove(ref, { gc: !bool(p, 'no-prune') });
          for (const n of res.untagged) g.out.write(`Untagged: ${n.includes('@') ? n : familiarName(parseReference(n))}\n`);
          if (res.gc && (res.gc.content.length || res.gc.snapshots.length)) g.out.write(`Deleted: ${info.id} (${humanSize(res.gc.bytes)} freed)\n`);
        } catch (e) {
          failed++;
          report(e, g);
        }
      }
      return failed ? 1 : 0;
    },
  },

  tag: {
    usage: 'corral tag SOURCE TARGET',
    flags: [],
    async run(svc, p, g) {
      need(p, 2, this.usage);
      g.ctx = { ...g.ctx, action: `tag ${p.positional[0]}`, image: p.positional[0], remote: false };
      svc.tag(p.positional[0]!, p.positional[1]!);
      return 0;
    },
  },

  import: {
    usage: 'corral import [--name REPO[:TAG]] FILE|DIR|-',
    flags: [
      { name: 'name', type: 'string', help: 'name for images the archive does not name (or names only by tag)' },
      { name: 'quiet', alias: ['q'], type: 'bool' },
    ],
    async run(svc, p, g) {
      need(p, 1, this.usage);
      const src = p.positional[0]!;
      g.ctx = { ...g.ctx, action: `import ${src}`, remote: false };
      if (src === '-' && process.stdin.isTTY) throw new InvalidArgumentError('refusing to read an archive from a terminal; pipe one in or name a file');
      const res = await importImages(svc, src === '-' ? (process.stdin as AsyncIterable<Buffer>) : resolve(src), { name: str(p, 'name') });
      for (const i of res.images) {
        const shown = i.names.filter((n) => !n.includes('@')).map((n) => familiarName(parseReference(n)));
        g.out.write(`Loaded image: ${shown.join(', ') || i.name} (${shortId(i.id)}, ${res.format})\n`);
      }
      return 0;
    },
  },

  export: {
    usage: 'corral export [--output FILE] [--format docker|oci] [--oci-dir DIR] IMAGE…',
    flags: [
      { name: 'output', alias: ['o'], type: 'string', help: 'write the archive to FILE (default: standard output)' },
      { name: 'format', type: 'string', help: 'docker (docker save archive, default) or oci (OCI layout tar)' },
      { name: 'oci-dir', type: 'string', help: 'write an OCI layout directory instead of a tar' },
    ],
    async run(svc, p, g) {
      need(p, 1, this.usage);
      g.ctx = { ...g.ctx, action: `export ${p.positional.join(' ')}`, image: p.positional.join(' '), remote: false };
      const dir = str(p, 'oci-dir');
      if (dir) {
        await exportLayoutDir(svc, p.positional, resolve(dir));
        return 0;
      }
      const format = (str(p, 'format') ?? 'docker') as ExportFormat;
      if (format !== 'docker' && format !== 'oci') throw new UsageError(`--format must be "docker" or "oci", not "${format}"`);
      const file = str(p, 'output');
      if (!file && g.out.isTTY) throw new InvalidArgumentError('refusing to write an archive to a terminal; use --output FILE or redirect standard output');
      await exportImages(svc, p.positional, file ? resolve(file) : g.out, format);
      return 0;
    },
  },

  push: {
    usage: 'corral push [--creds USER:PASSWORD] IMAGE [TARGET]',
    flags: [{ name: 'creds', type: 'string', help: 'USER:PASSWORD for the registry' }],
    async run(svc, p, g) {
      need(p, 1, this.usage);
      const [src, target] = p.positional as [string, string | undefined];
      g.ctx = { ...g.ctx, action: `push ${src}`, image: src, remote: false };
      const info = svc.get(src);
      const dest = target ?? (src.includes('/') || !/^(sha256:)?[0-9a-f]{6,64}$/.test(src) ? formatReference(parseReference(src)) : info.name);
      g.ctx = { ...g.ctx, registry: registryOf(dest), remote: true, image: dest };
      g.err.write(`Pushing ${familiarName(parseReference(dest))} (${info.layers.length} layer(s), ${humanSize(info.size)})\n`);
      const digest = await svc.push(src, { target: dest, auth: parseCreds(str(p, 'creds')) });
      g.out.write(`${familiarName(parseReference(dest))}: digest: ${digest} size: ${info.size}\n`);
      return 0;
    },
  },

  'system df': {
    usage: 'corral system df [--verbose]',
    flags: [{ name: 'verbose', alias: ['v'], type: 'bool' }],
    async run(svc, p, g) {
      const df = await svc.df();
      const images = uniqueImages(svc);
      const active = images.filter((i) => svc.usersOf(i.chainId).length > 0);
      const committed = df.snapshots.filter((s) => s.kind === 'committed');
      const containers = df.snapshots.filter((s) => s.kind !== 'committed');
      const sum = (xs: Array<{ size: number }>) => xs.reduce((a, s) => a + s.size, 0);
      const activeBytes = active.reduce((a, i) => a + i.size, 0);
      g.out.write(table(['TYPE', 'TOTAL', 'ACTIVE', 'SIZE', 'RECLAIMABLE'], [
        ['Images', String(images.length), String(active.length), humanSize(df.contentBytes), humanSize(Math.max(0, df.contentBytes - activeBytes))],
        ['Layer snapshots', String(committed.length), String(committed.length), humanSize(sum(committed)), '0B'],
        ['Container snapshots', String(containers.length), String(containers.length), humanSize(sum(containers)), '0B'],
      ]));
      if (bool(p, 'verbose')) {
        g.out.write('\n' + table(['SNAPSHOT', 'KIND', 'SIZE', 'INODES'], df.snapshots.map((s) => [s.key.length > 40 ? shortId(s.key) : s.key, s.kind, humanSize(s.size), String(s.inodes)])));
      }
      g.out.write(`\nStore: ${svc.root} (${svc.snapshotter.name} snapshotter, ${df.blobs} blobs)\n`);
      return 0;
    },
  },

  'image prune': {
    usage: 'corral image prune [--all] [--force]',
    flags: [
      { name: 'all', alias: ['a'], type: 'bool', help: 'remove every image no container uses' },
      { name: 'force', alias: ['f'], type: 'bool', help: 'do not ask for confirmation' },
    ],
    async run(svc, p, g) {
      const all = bool(p, 'all');
      if (all && !bool(p, 'force') && process.stdin.isTTY) {
        const rl = createInterface({ input: process.stdin, output: g.err });
        const a = await rl.question('WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue? [y/N] ');
        rl.close();
        if (!/^y(es)?$/i.test(a.trim())) return 0;
      }
      const res = await svc.prune({ all });
      if (res.removed.length) {
        g.out.write('Deleted Images:\n');
        for (const n of res.removed) g.out.write(`untagged: ${n.includes('@') ? n : familiarName(parseReference(n))}\n`);
      }
      g.out.write(`Total reclaimed space: ${humanSize(res.gc.bytes)}\n`);
      return 0;
    },
  },
};

/** docker's `image …` spellings. */
const aliases: Record<string, string> = {
  'image ls': 'images', 'image list': 'images', 'image rm': 'rmi', 'image remove': 'rmi', 'image inspect': 'inspect',
  'image pull': 'pull', 'image push': 'push', 'image tag': 'tag', 'image import': 'import', 'image load': 'import',
  'image export': 'export', 'image save': 'export', load: 'import', save: 'export', 'image df': 'system df',
};

function usage(): string {
  return `Usage: corral [global flags] COMMAND [flags] [args]

Commands:
${Object.values(commands).map((c) => `   ${c.usage}`).join('\n')}

Also: image ls|rm|inspect|pull|push|tag|import|export|prune, load (= import), save (= export).

Global flags:
${usageLines(GLOBAL)}
`;
}

function report(e: unknown, g: Globals): Explained {
  const x = explain(e, g.ctx);
  g.err.write(`Error: ${x.message}\n`);
  if (x.hint) g.err.write(`Hint: ${x.hint}\n`);
  return x;
}
type Explained = ReturnType<typeof explain>;

export async function main(argv: string[], out: NodeJS.WriteStream = process.stdout, err: NodeJS.WriteStream = process.stderr): Promise<number> {
  // the command is the first one or two positional words; flags may come anywhere
  const pre = parseArgs(argv, GLOBAL.concat(Object.values(commands).flatMap((c) => c.flags)).filter((f, i, a) => a.findIndex((x) => x.name === f.name) === i));
  const words = pre.positional;
  let name = words[0] ?? '';
  let consumed = 1;
  if ((name === 'image' || name === 'system') && words[1]) {
    name = `${name} ${words[1]}`;
    consumed = 2;
  }
  name = aliases[name] ?? name;
  if (bool(pre, 'help') && !commands[name]) {
    out.write(usage());
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    err.write(words[0] ? `corral: unknown command "${words.slice(0, consumed).join(' ')}"\n\n${usage()}` : usage());
    return 2;
  }
  // re-parse with exactly this command's flags, so a flag of another command is an error
  const p = parseArgs(argv, [...GLOBAL, ...cmd.flags]);
  p.positional = p.positional.slice(consumed);
  if (bool(p, 'help')) {
    out.write(`Usage: ${cmd.usage}\n\n${usageLines([...cmd.flags, ...GLOBAL])}\n`);
    return 0;
  }
  const root = resolve(str(p, 'root') ?? '/var/lib/corral');
  const g: Globals = { root, out, err, ctx: { action: name, root } };
  const snap = str(p, 'snapshotter');
  if (snap !== undefined && snap !== 'overlayfs' && snap !== 'native') throw new UsageError(`--snapshotter must be overlayfs or native, not "${snap}"`);
  const authfile = str(p, 'authfile') ?? join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
  const hostsDir = str(p, 'hosts-dir');
  if (hostsDir && !existsSync(hostsDir)) throw new UsageError(`--hosts-dir ${hostsDir} does not exist`);
  let svc: ImageService;
  try {
    svc = await ImageService.open({
      root,
      snapshotter: (snap as 'overlayfs' | 'native' | undefined) ?? 'auto',
      hosts: { configDir: hostsDir ? resolve(hostsDir) : undefined, insecure: list(p, 'insecure-registry') },
      dockerConfig: existsSync(authfile) ? authfile : undefined,
      ...(str(p, 'platform') ? { platform: parsePlatform(str(p, 'platform')!) } : {}),
    });
  } catch (e) {
    g.ctx = { action: `open the image store ${root}`, root };
    report(e, g);
    return 1;
  }
  try {
    return await cmd.run(svc, p, g);
  } catch (e) {
    report(e, g);
    return e instanceof UsageError ? 2 : 1;
  } finally {
    svc.close();
    closeIdleConnections();
  }
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`Error: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 2; // only argument parsing fails outside main's own error handling
    },
  );
}
