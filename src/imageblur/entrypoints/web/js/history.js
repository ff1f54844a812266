// History: the recent pictures, newest first, a page at a time, with status, face count,
// a view button and delete (in two steps, so one stray click deletes nothing).
import { ApiError, getJson, request } from './api.js';
import { $, formatDate, h } from './dom.js';
import { errorHeadline, facesWords, hasResult, statusWords } from './messages.js';
import { announce, forget, on } from './pictures.js';

const PAGE_SIZE = 10;
const CONFIRM_MS = 5000;
let offset = 0;
let refreshing = null;
let again = false;

export function initHistory() {
  $('history-refresh').addEventListener('click', () => refresh());
  $('history-newer').addEventListener('click', () => {
    offset = Math.max(0, offset - PAGE_SIZE);
    refresh();
  });
  $('history-older').addEventListener('click', () => {
    offset += PAGE_SIZE;
    refresh();
  });
  on('picture:changed', () => refresh());
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
  const message = $('history-message');
  let page;
  try {
    page = await getJson(`pictures?limit=${PAGE_SIZE}&offset=${offset}`);
  } catch (error) {
    message.textContent = error instanceof ApiError
      ? `${errorHeadline(error)} ${error.message}` : 'The history could not be loaded.';
    return;
  }
  if (page.items.length === 0 && offset > 0 && page.total > 0) {
    // The last page emptied (deletes): show the one before it.
    offset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    return load();
  }
  message.textContent = page.total === 0 ? 'No pictures yet.' : '';
  $('history-list').replaceChildren(...page.items.map(row));
  $('history-position').textContent = page.total === 0 ? ''
    : `${offset + 1}–${offset + page.items.length} of ${page.total}`;
  $('history-newer').disabled = offset === 0;
  $('history-older').disabled = page.next === null;
}

function row(record) {
  const facts = [statusWords(record.status), facesWords(record.faces), formatDate(record.created_at)];
  const actions = h('div', { class: 'toolbar' });
  if (hasResult(record.status)) {
    actions.append(h('button', { type: 'button', onclick: () => announce('picture:open', record) },
      'View'));
  }
  actions.append(deleteButton(record));
  const item = h('li', { class: 'history-row', 'data-id': record.id, 'data-status': record.status },
    h('p', { class: 'file-name', text: record.name }),
    h('p', { class: 'meta', text: facts.filter(Boolean).join(' · ') }),
    record.status === 'failed' && record.error ? h('p', { class: 'error', text: record.error }) : null,
    actions);
  return item;
}

function deleteButton(record) {
  let armed = null;
  const button = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${record.name}` },
    'Delete');
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = 'Really delete?';
      armed = setTimeout(() => {
        armed = null;
        button.textContent = 'Delete';
      }, CONFIRM_MS);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    try {
      await request(`picture/${encodeURIComponent(record.id)}`, { method: 'DELETE' });
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        $('history-message').textContent = `${errorHeadline(error)} ${error.message}`;
        button.disabled = false;
        return;
      }
    }
    forget(record.id);
    announce('picture:deleted', record.id);
    refresh();
  });
  return button;
}
