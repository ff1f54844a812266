// Bucket batches (POST batches, run from the CLI or the API): the open ones and those that
// ended in the last hour (GET batches?ended_within_s), each with where it reads and
// writes, its status, its counts, its pace and a progress bar. Asked again every few
// seconds while one is open, now and then otherwise (a batch posted elsewhere shows up).
// Only on a server where batches may name a location (GET limits `batches`); the section
// stays hidden while there is nothing to show, and for a token the server does not let
// list batches (a reviewer's: 403): the server decides, the page only shows.
// The rows are not live regions (they change every poll); the status line says, once,
// when a batch this page watched ends.
import { ApiError, getJson } from './api.js';
import { $, h } from './dom.js';

const RECENT_S = 3600; // ended batches stay shown this long
const OPEN_POLL_MS = 2000;
const IDLE_POLL_MS = 30000;
const LIMIT = 100; // the server's largest page; at most IMAGEBLUR_MAX_BATCHES are open

const STATUS_WORDS = {
  listing: 'Listing the source…',
  running: 'Running',
  done: 'Done',
  cancelled: 'Stopped',
  failed: 'Failed',
};

// Why items were skipped (the server's reason codes); an unknown one is shown as it is.
const SKIP_WORDS = {
  not_an_image: 'not a picture',
  target_exists: 'already in the target',
  already_done: 'written by an earlier batch',
  changed: 'changed since listed',
  source_gone: 'gone from the source',
  cancelled: 'dropped when stopped',
  dry_run: 'not written (a dry run)',
};

const rows = new Map(); // batch id -> {element, parts, signature, status}
let timer = null;
let loading = null;
let stopped = false; // the token cannot list batches: wait for another token
let served = false; // GET limits said batches run here
let failing = false; // the status line says the last read failed

export function initBatches() {
  document.addEventListener('server:up', () => refreshBatches());
}

// Called with GET limits' answer (limits.js).
export function showBatches(on) {
  if (on === served) return;
  served = on;
  if (on) refreshBatches();
}

// Load now (a token given, the server back), then keep polling.
export function refreshBatches() {
  if (!served) return Promise.resolve();
  stopped = false;
  clearTimeout(timer);
  if (!loading) loading = load().finally(() => { loading = null; });
  return loading;
}

function isOpen(batch) {
  return batch.status === 'listing' || batch.status === 'running';
}

async function load() {
  let body;
  try {
    body = await getJson(`batches?ended_within_s=${RECENT_S}&limit=${LIMIT}`);
  } catch (error) {
    if (!(error instanceof ApiError) || [401, 403, 404].includes(error.status)) {
      // No token given, or one that may not list batches: nothing to show, and no
      // polling that would bring the token prompt back.
      stopped = true;
      $('batches').hidden = true;
      $('batch-list').replaceChildren();
      rows.clear();
      return;
    }
    failing = true;
    say(`The batches could not be read: ${error.message}`);
    schedule(IDLE_POLL_MS);
    return;
  }
  if (failing) {
    failing = false;
    say('');
  }
  show(body.items);
  schedule(body.items.some(isOpen) ? OPEN_POLL_MS : IDLE_POLL_MS);
}

function schedule(ms) {
  clearTimeout(timer);
  if (!stopped) timer = setTimeout(() => refreshBatches(), ms);
}

function say(text) {
  const message = $('batches-message');
  if (message.textContent !== text) message.textContent = text;
}

// Rows kept and updated in place (so a screen reader's place in the list holds), new
// ones inserted in the server's order (newest first), gone ones removed.
function show(items) {
  const list = $('batch-list');
  const wanted = new Set(items.map((batch) => batch.id));
  for (const [id, row] of rows) {
    if (!wanted.has(id)) {
      row.element.remove();
      rows.delete(id);
    }
  }
  const ended = [];
  items.forEach((batch, index) => {
    let row = rows.get(batch.id);
    if (!row) {
      row = makeRow(batch);
      rows.set(batch.id, row);
    } else if (isOpen({ status: row.status }) && !isOpen(batch)) {
      ended.push(batch);
    }
    fill(row, batch);
    const at = list.children[index] || null;
    if (at !== row.element) list.insertBefore(row.element, at);
  });
  $('batches').hidden = items.length === 0;
  if (ended.length) say(ended.map((batch) => `${title(batch)}: ${endWords(batch)}`).join(' '));
}

// "file:/srv/in/photos/" or "s3://bucket/photos/", as the CLI takes them.
function where(location) {
  const { bucket, prefix } = location;
  return bucket.startsWith('file:') ? `${bucket.replace(/\/$/, '')}/${prefix}`
    : `s3://${bucket}/${prefix}`;
}

function title(batch) {
  return `${where(batch.source)} → ${where(batch.target)}`;
}

function makeRow(batch) {
  const nameId = `batch-name-${batch.id}`;
  const row = { signature: '', status: batch.status };
  row.name = h('p', { class: 'file-name', id: nameId });
  row.state = h('p', { class: 'meta' });
  row.progress = h('progress', { max: 1, 'aria-labelledby': nameId });
  row.counts = h('p', { class: 'meta' });
  row.error = h('p', { class: 'error', hidden: true });
  row.element = h('li', { class: 'history-row batch-row' },
    row.name, row.state, row.progress, row.counts, row.error);
  return row;
}

function fill(row, batch) {
  row.status = batch.status;
  const signature = JSON.stringify(batch);
  if (signature === row.signature) return;
  row.signature = signature;
  const { element } = row;
  element.dataset.id = batch.id;
  element.dataset.status = batch.status;
  row.name.textContent = batch.dry_run ? `${title(batch)} (dry run)` : title(batch);
  row.state.textContent = stateWords(batch);
  fillProgress(row.progress, batch);
  row.counts.textContent = countWords(batch);
  row.error.textContent = batch.error || '';
  row.error.hidden = !batch.error;
}

// A bar of ended items out of the total; without a total yet (still listing) it has no
// value, which a browser shows and reads as "in progress".
function fillProgress(bar, batch) {
  const total = batch.total;
  if (total === null || total === undefined) {
    bar.removeAttribute('value');
    bar.setAttribute('aria-valuetext', `${ended(batch)} ended, ${batch.listed} listed so far`);
    return;
  }
  bar.max = Math.max(total, 1);
  bar.value = total === 0 ? 1 : ended(batch);
  bar.setAttribute('aria-valuetext', `${ended(batch)} of ${total} ended`);
}

function skippedCount(batch) {
  return Object.values(batch.skipped || {}).reduce((sum, n) => sum + n, 0);
}

function ended(batch) {
  return batch.done + batch.failed + skippedCount(batch);
}

function stateWords(batch) {
  const facts = [STATUS_WORDS[batch.status] || batch.status];
  if (batch.total !== null && batch.total !== undefined) {
    facts.push(`${ended(batch)} of ${batch.total} ended`);
  } else {
    facts.push(`${batch.listed} listed so far`);
  }
  if (isOpen(batch)) {
    facts.push(paceWords(batch.throughput_per_s), etaWords(batch.eta_s));
  }
  return facts.join(' · ');
}

function paceWords(perS) {
  if (!perS) return 'no item ended in the last minute';
  const shown = perS >= 10 ? perS.toFixed(0) : perS.toFixed(1);
  return `${shown} items a second`;
}

function etaWords(seconds) {
  if (seconds === null || seconds === undefined) return 'time left not known yet';
  if (seconds < 60) return 'less than a minute left';
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min left`;
  const hours = Math.floor(minutes / 60);
  return `about ${hours} h ${minutes % 60} min left`;
}

function skippedWords(skipped) {
  return Object.entries(skipped || {})
    .map(([reason, n]) => `${n} ${SKIP_WORDS[reason] || reason}`)
    .join(', ');
}

function countWords(batch) {
  const skipped = skippedCount(batch);
  const parts = [`${batch.done} done`, `${batch.failed} failed`, `${skipped} skipped`];
  const facts = [parts.join(', ') + (skipped ? ` (${skippedWords(batch.skipped)})` : '')];
  if (batch.faces) facts.push(batch.faces === 1 ? '1 face hidden' : `${batch.faces} faces hidden`);
  return facts.join(' · ');
}

function endWords(batch) {
  return `${(STATUS_WORDS[batch.status] || batch.status).toLowerCase()}; ${countWords(batch)}.`;
}
