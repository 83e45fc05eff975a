/**
 * Mark-and-sweep garbage collection. Roots: image targets, lease resources, and active/view
 * snapshots (containers). Edges: content labels containerd.io/gc.ref.content.* (→ content)
 * and containerd.io/gc.ref.snapshot.<snapshotter> (→ snapshot), snapshot parents.
 */
import type { ContentStore } from './content/store.ts';
import { GC_REF_CONTENT, GC_REF_SNAPSHOT, LABEL_LEASE_EXPIRE, type MetadataDB } from './metadata/db.ts';
import type { Snapshotter } from './snapshot/snapshotter.ts';

export interface GcResult {
  content: string[];
  snapshots: string[];
  bytes: number;
}

export async function collectGarbage(db: MetadataDB, content: ContentStore, snap: Snapshotter): Promise<GcResult> {
  for (const l of db.listLeases()) {
    const exp = l.labels[LABEL_LEASE_EXPIRE];
    if (exp !== undefined && Date.parse(exp) <= Date.now()) db.deleteLease(l.id);
  }
  const contents = new Map(db.listContent().map((c) => [c.digest, c]));
  const snaps = new Map(db.listSnapshots().map((s) => [s.key, s]));
  const liveContent = new Set<string>();
  const liveSnaps = new Set<string>();
  const markSnap = (key: string | null) => {
    while (key !== null && !liveSnaps.has(key)) {
      const s = snaps.get(key);
      if (!s) return;
      liveSnaps.add(key);
      key = s.parent;
    }
  };
  const stack: string[] = [];
  const markContent = (d: string) => {
    if (!liveContent.has(d)) {
      liveContent.add(d);
      stack.push(d);
    }
  };
  for (const img of db.listImages()) markContent(img.digest);
  for (const r of db.leaseResources()) {
    if (r.type === 'content') markContent(r.ref);
    else if (r.type === 'snapshot') markSnap(r.ref);
    else if (r.type === 'image') {
      const img = db.getImage(r.ref);
      if (img) markContent(img.digest);
    }
  }
  for (const s of snaps.values()) if (s.kind !== 'committed') markSnap(s.key);
  while (stack.length) {
    const c = contents.get(stack.pop()!);
    if (!c) continue;
    for (const [k, v] of Object.entries(c.labels)) {
      if (k.startsWith(GC_REF_CONTENT)) markContent(v);
      else if (k === `${GC_REF_SNAPSHOT}${snap.name}`) markSnap(v);
    }
  }
  const res: GcResult = { content: [], snapshots: [], bytes: 0 };
  // snapshots: children before parents
  const dead = [...snaps.values()].filter((s) => !liveSnaps.has(s.key)).sort((a, b) => b.id - a.id);
  const depth = (k: string | null): number => (k === null ? 0 : 1 + depth(snaps.get(k)?.parent ?? null));
  dead.sort((a, b) => depth(b.key) - depth(a.key));
  for (const s of dead) {
    const u = await snap.usage(s.key).catch(() => ({ size: 0, inodes: 0 }));
    await snap.remove(s.key);
    res.bytes += u.size;
    res.snapshots.push(s.key);
  }
  for (const c of contents.values()) {
    if (liveContent.has(c.digest)) continue;
    db.deleteContent(c.digest); // record first: a crash in between leaves an orphan blob, removed on start
    await content.delete(c.digest);
    res.bytes += c.size;
    res.content.push(c.digest);
  }
  return res;
}
