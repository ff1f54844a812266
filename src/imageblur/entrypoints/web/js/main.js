// The page: upload, result, batches, history and the token prompt, wired together.
import { initAreas } from './areas.js';
import { initBatches, refreshBatches } from './batches.js';
import { initHistory, refresh } from './history.js';
import { initOutage } from './outage.js';
import './review.js';
import { initResult } from './result.js';
import { initTokenButton } from './token.js';
import { initUploads } from './uploads.js';

initTokenButton(() => {
  refresh();
  refreshBatches();
});
initUploads();
initAreas();
initResult();
initHistory();
initOutage();
initBatches();
refresh();
