// While the server cannot be reached: the history says so above its rows, which are
// marked as possibly out of date, and the page keeps asking (healthz) until the server
// answers; then the line goes and the history is loaded afresh. The upload cards say it
// themselves (uploads.js), each from its own polling.
import { lastAnswerTime, request, serverDown } from './api.js';
import { $, delay } from './dom.js';
import { refresh } from './history.js';
import { outageText } from './messages.js';

const PROBE_MS = 2000;
let probing = false;

export function initOutage() {
  document.addEventListener('server:down', () => {
    $('history-outage').textContent = `${outageText(lastAnswerTime())} The history below may be out of date.`;
    $('history-list').classList.add('stale');
    probe();
  });
  document.addEventListener('server:up', () => {
    $('history-outage').textContent = '';
    $('history-list').classList.remove('stale');
    refresh();
  });
}

// Ask until an answer comes (request() then sends 'server:up'); one loop at a time.
async function probe() {
  if (probing) return;
  probing = true;
  while (serverDown()) {
    await delay(PROBE_MS);
    try {
      await request('healthz', { timeoutMs: PROBE_MS * 2 });
    } catch {
      // Still down: the line stays as it is.
    }
  }
  probing = false;
}
