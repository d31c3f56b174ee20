import { log } from '../log.js';
import type { Store } from './store.js';

export interface ImageGcReport {
  removed: string[];
  skipped: { id: string; reason: string }[];
  orphans: { tmp: number; blobs: number };
}

/**
 * Remove images not used for the grace period, and the leftovers of crashed
 * imports. An image whose rendered tree a pod still holds or uses (`pinned`)
 * is kept.
 */
export function gcImages(store: Store, gracePeriodMs: number, pinned: ReadonlySet<string> = new Set(), now = Date.now()): ImageGcReport {
  const report: ImageGcReport = { removed: [], skipped: [], orphans: { tmp: 0, blobs: 0 } };
  for (const img of store.listImages()) {
    if (now - img.lastUsed < gracePeriodMs) continue;
    try {
      store.removeImage(img.id, pinned);
      report.removed.push(img.id);
    } catch (err) {
      report.skipped.push({ id: img.id, reason: (err as Error).message });
      log().debug({ id: img.id, err: (err as Error).message }, 'image kept by gc');
    }
  }
  report.orphans = store.removeOrphans();
  return report;
}
