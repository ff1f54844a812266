// History: the recent pictures, newest first, a page at a time, with status, face count,
// a view button and delete (in two steps, so one stray click deletes nothing). When the
// server takes videos, the newest videos follow in a list of their own (one page).
// A refresh updates only the rows that changed, in place: the control a person is on
// (found by picture id) keeps its focus while uploads finish around it.
import { ApiError, getJson, request } from './api.js';
import { $, focusQuietly, formatDate, h } from './dom.js';
import { errorHeadline, facesWords, hasResult, statusWords } from './messages.js';
import { announce, forget, on } from './pictures.js';
import { videosOn } from './videos.js';

const PAGE_SIZE = 10;
let offset = 0;
let refreshing = null;
let again = false;
const rows = new Map(); // picture id -> {element, record, parts}
let notice = ''; // what the person's last action did ("Deleted …"), kept until the next
let pagerFocus = null; // the pager button pressed, until the page it asked for is shown
let deleting = null; // {id, action}: the row being deleted, where focus goes when it goes

export function initHistory() {
  $('history-refresh').addEventListener('click', () => {
    notice = '';
    refresh();
  });
  $('history-newer').addEventListener('click', () => page(-PAGE_SIZE, 'history-newer'));
  $('history-older').addEventListener('click', () => page(PAGE_SIZE, 'history-older'));
  on('picture:changed', () => refresh());
}

function page(step, buttonId) {
  offset = Math.max(0, offset + step);
  notice = '';
  pagerFocus = buttonId;
  refresh();
}

// One load at a time; a refresh asked for meanwhile runs once after it.
export function refresh() {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = load().finally(() => {
    refreshing = null;
    if (again) {
      again = false;
      refresh();
    }
  });
  return refreshing;
}

async function load() {
  const asked = offset;
  let body;
  try {
    body = await getJson(`pictures?limit=${PAGE_SIZE}&offset=${offset}`);
  } catch (error) {
    // Not an ApiError: the token prompt was cancelled (token.js).
    say(error instanceof ApiError ? `${errorHeadline(error)} ${error.message}`
      : 'The history needs the API token: enter it with the "API token" button at the top '
        + 'of the page.');
    return;
  }
  if (body.items.length === 0 && offset > 0 && body.total > 0) {
    // The last page emptied (deletes): show the one before it.
    offset = Math.floor((body.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    return load();
  }
  say(body.total === 0 ? 'No pictures yet.' : '');
  update(body.items, $('history-list'));
  const position = $('history-position');
  const text = body.total === 0 ? ''
    : `${offset + 1}–${offset + body.items.length} of ${body.total}`;
  if (position.textContent !== text) position.textContent = text;
  $('history-newer').disabled = offset === 0;
  $('history-older').disabled = body.next === null;
  if (pagerFocus && asked === offset) {
    keepPagerFocus(pagerFocus);
    pagerFocus = null;
  }
  if (videosOn()) await loadVideos();
}

// The newest videos (GET videos): one page, no pager.
async function loadVideos() {
  let body;
  try {
    body = await getJson(`videos?limit=${PAGE_SIZE}`);
  } catch {
    return; // the pictures' status line already says what is wrong
  }
  $('video-history').hidden = false;
  const text = body.total === 0 ? 'No videos yet.'
    : body.total > body.items.length ? `The newest ${body.items.length} of ${body.total}.` : '';
  const message = $('video-history-message');
  if (message.textContent !== text) message.textContent = text;
  update(body.items, $('video-list'));
}

// The status line: the last action's notice, then the state; written only on a change,
// so a screen reader hears it once.
function say(text) {
  const message = $('history-message');
  const wanted = [notice, text].filter(Boolean).join(' ');
  if (message.textContent !== wanted) message.textContent = wanted;
}

// The list shows `items` in order: rows kept (updated in place when their record
// changed), new rows inserted, rows no longer on the page removed. A row that stays is
// never detached, so focus inside it stays too.
function update(items, list) {
  const wanted = new Set(items.map((record) => record.id));
  const lost = removeRows(list, wanted);
  items.forEach((record, index) => {
    let entry = rows.get(record.id);
    if (entry) fill(entry, record);
    else {
      entry = makeRow(record);
      rows.set(record.id, entry);
    }
    const at = list.children[index] || null;
    if (at !== entry.element) list.insertBefore(entry.element, at);
  });
  if (lost) focusRowAt(list, lost.index, lost.action);
}

// Remove the rows not in `wanted`; when focus was in one (or it is the row being
// deleted), say where it was: the row then in its place gets it.
function removeRows(list, wanted) {
  const focused = document.activeElement;
  let lost = null;
  [...list.children].forEach((element, index) => {
    const { id } = element.dataset;
    if (wanted.has(id)) return;
    if (deleting?.id === id) {
      lost = { index, action: deleting.action };
      deleting = null;
    } else if (element.contains(focused)) {
      lost = { index, action: focused.dataset.action || 'view' };
    }
    element.remove();
    rows.delete(id);
  });
  return lost;
}

function makeRow(record) {
  const entry = { record: null, signature: '' };
  entry.name = h('p', { class: 'file-name' });
  entry.meta = h('p', { class: 'meta' });
  entry.error = h('p', { class: 'error', hidden: true });
  const video = record.kind === 'video';
  entry.view = h('button', { type: 'button', 'data-action': 'view',
    onclick: () => announce(video ? 'video:open' : 'picture:open', entry.record) },
  video ? 'Play' : 'View');
  entry.remove = deleteButton(entry);
  entry.actions = h('div', { class: 'toolbar' }, entry.remove);
  entry.element = h('li', { class: 'history-row' },
    entry.name, entry.meta, entry.error, entry.actions);
  fill(entry, record);
  return entry;
}

// Bring a row up to date with its record, touching only what differs.
function fill(entry, record) {
  entry.record = record;
  const signature = JSON.stringify([record.name, record.status, record.faces,
    record.created_at, record.error]);
  if (signature === entry.signature) return;
  entry.signature = signature;
  const { element } = entry;
  element.dataset.id = record.id;
  element.dataset.status = record.status;
  entry.name.textContent = record.name;
  const facts = [statusWords(record.status), facesWords(record.faces), formatDate(record.created_at)];
  entry.meta.textContent = facts.filter(Boolean).join(' · ');
  const failed = record.status === 'failed' && record.error;
  entry.error.textContent = failed ? record.error : '';
  entry.error.hidden = !failed;
  entry.view.setAttribute('aria-label', `${entry.view.textContent} ${record.name}`);
  if (!entry.remove.armed) entry.remove.setAttribute('aria-label', `Delete ${record.name}`);
  if (hasResult(record.status) && !entry.view.parentNode) entry.actions.prepend(entry.view);
  if (!hasResult(record.status) && entry.view.parentNode) {
    const hadFocus = document.activeElement === entry.view;
    entry.view.remove();
    if (hadFocus) entry.remove.focus();
  }
}

// A pager button that became disabled gives focus to the other one, or to the position.
function keepPagerFocus(buttonId) {
  const button = $(buttonId);
  if (!button.disabled) return;
  const other = $(buttonId === 'history-older' ? 'history-newer' : 'history-older');
  if (!other.disabled) other.focus();
  else focusQuietly($('history-position'));
}

// Delete in two steps: the first press arms the button and says so (in its name and in
// the status line), the second deletes. It disarms when focus leaves it or on Escape.
function deleteButton(entry) {
  const button = h('button', { type: 'button', class: 'danger', 'data-action': 'delete' },
    'Delete');
  const disarm = () => {
    if (!button.armed) return;
    button.armed = false;
    button.textContent = 'Delete';
    button.setAttribute('aria-label', `Delete ${entry.record.name}`);
  };
  button.addEventListener('blur', disarm);
  button.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') disarm();
  });
  button.addEventListener('click', async () => {
    const { record } = entry;
    if (!button.armed) {
      button.armed = true;
      button.textContent = 'Really delete?';
      button.setAttribute('aria-label', `Really delete ${record.name}? Press again to delete it`);
      notice = `Press "Really delete?" again to delete ${record.name}; this cannot be undone.`;
      say('');
      return;
    }
    if (!button.busy) await remove(entry, button);
  });
  return button;
}

async function remove(entry, button) {
  const { record } = entry;
  // Busy, not disabled: a disabled button loses focus, and focus must not fall.
  button.busy = true;
  button.setAttribute('aria-disabled', 'true');
  try {
    const kind = record.kind === 'video' ? 'video' : 'picture';
    await request(`${kind}/${encodeURIComponent(record.id)}`, { method: 'DELETE' });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      notice = `${record.name} was not deleted. ${errorHeadline(error)} ${error.message}`;
      say('');
      button.busy = false;
      button.setAttribute('aria-disabled', 'false');
      return;
    }
  }
  // Focus goes to the row that takes this one's place (the next, or the new last one).
  deleting = { id: record.id, action: 'delete' };
  notice = `Deleted ${record.name}.`;
  forget(record.id);
  announce('picture:deleted', record.id);
  await refresh();
}

function focusRowAt(list, index, action) {
  const items = list.children;
  const item = items[Math.min(index, items.length - 1)];
  const control = item?.querySelector(`[data-action="${action}"]`)
    || item?.querySelector('[data-action]');
  if (control) control.focus();
  else focusQuietly($('history-message'));
}
