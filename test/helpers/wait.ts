/** Poll until `cond` holds (a condition on real state, not a timing assertion). */
export async function waitFor(cond: () => boolean, ms = 10000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try { if (cond()) return; } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
