// Upload: drop or pick several files; each gets a card with its upload progress, then its
// status, live, until done, review or failed.
import { ApiError, getJson, uploadPicture } from './api.js';
import { $, delay, formatBytes, h, removeKeepingFocus } from './dom.js';
import {
  errorHeadline, facesWords, hasResult, isFinal, isRetryable, statusWords,
} from './messages.js';
import { announce, forget, on, rememberOriginal, resultUrl } from './pictures.js';

const POLL_MS = 1000;
const POLL_LIMIT_MS = 15 * 60 * 1000;
const BUSY_RETRIES = 3;
const cards = new Map(); // picture id -> card

export function initUploads() {
  const input = $('file-input');
  input.addEventListener('change', () => {
    addFiles([...input.files]);
    input.value = '';
  });
  const zone = $('drop-zone');
  // Dropping outside the zone must not navigate away from the page.
  for (const type of ['dragover', 'drop']) {
    document.addEventListener(type, (event) => event.preventDefault());
  }
  zone.addEventListener('dragenter', () => zone.classList.add('over'));
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (event) => {
    zone.classList.remove('over');
    addFiles([...(event.dataTransfer?.files || [])]);
  });
  on('picture:deleted', (id) => {
    cards.get(id)?.element.remove();
    cards.delete(id);
  });
  on('picture:reviewed', (record) => {
    const card = cards.get(record.id);
    if (card) showFinal(card, record);
  });
}

function addFiles(files) {
  for (const file of files) {
    const card = makeCard(file);
    $('uploads').prepend(card.element);
    send(card);
  }
}

function makeCard(file) {
  const card = {
    file,
    id: null,
    progress: h('progress', { max: 100, value: 0, 'aria-label': `Upload of ${file.name}` }),
    status: h('p', { class: 'status', role: 'status', text: 'Uploading…' }),
    error: h('p', { class: 'error', role: 'alert', hidden: true }),
    result: h('div', { class: 'thumb' }),
    actions: h('div', { class: 'toolbar' }),
  };
  card.element = h('li', { class: 'card' },
    h('p', { class: 'file-name', text: file.name }),
    h('p', { class: 'meta', text: formatBytes(file.size) }),
    card.progress, card.status, card.error, card.result, card.actions);
  return card;
}

async function send(card) {
  card.error.hidden = true;
  card.actions.replaceChildren();
  for (let attempt = 0; ; attempt += 1) {
    try {
      const record = await uploadPicture(card.file, (share) => {
        card.progress.value = Math.round(share * 100);
      });
      card.progress.value = 100;
      card.id = record.id;
      cards.set(record.id, card);
      rememberOriginal(record.id, card.file);
      card.element.dataset.id = record.id;
      announce('picture:changed', record.id);
      await follow(card, record);
      return;
    } catch (error) {
      const busy = error instanceof ApiError && error.status === 503;
      if (busy && attempt < BUSY_RETRIES) {
        const waitS = error.retryAfterS || 2;
        card.status.textContent = `The server is busy; retrying in ${waitS} s…`;
        await delay(waitS * 1000);
        continue;
      }
      showError(card, error);
      return;
    }
  }
}

function showError(card, error) {
  card.progress.hidden = true;
  card.status.textContent = 'Not uploaded';
  const apiError = error instanceof ApiError ? error : new ApiError(0, 'network', error.message);
  card.error.replaceChildren(
    h('strong', { text: errorHeadline(apiError) }), ' ', h('span', { text: apiError.message }));
  card.error.hidden = false;
  const buttons = [h('button', { type: 'button', class: 'secondary', onclick: () => removeKeepingFocus(card.element, $('file-input')) }, 'Dismiss')];
  if (isRetryable(apiError)) {
    buttons.unshift(h('button', { type: 'button', onclick: () => send(card) }, 'Retry'));
  }
  card.actions.replaceChildren(...buttons);
}

// Poll the record until it reaches a final status (bounded), then show the result.
async function follow(card, record) {
  const started = Date.now();
  let current = record;
  while (!isFinal(current.status) && cards.has(card.id)) {
    card.status.textContent = statusWords(current.status);
    if (Date.now() - started > POLL_LIMIT_MS) {
      card.status.textContent = 'Still not finished; see the history later.';
      return;
    }
    await delay(POLL_MS);
    try {
      current = await getJson(`picture/${encodeURIComponent(card.id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return; // deleted meanwhile
      card.status.textContent = `${errorHeadline(error)} Still trying…`;
    }
  }
  if (cards.has(card.id)) await showFinal(card, current);
}

async function showFinal(card, record) {
  card.progress.hidden = true;
  card.element.dataset.status = record.status;
  announce('picture:changed', record.id);
  const faces = facesWords(record.faces);
  card.status.textContent = faces ? `${statusWords(record.status)}: ${faces}` : statusWords(record.status);
  if (record.status === 'failed') {
    card.error.replaceChildren(h('strong', { text: 'The server could not anonymize it.' }), ' ',
      h('span', { text: record.error || 'no reason given' }));
    card.error.hidden = false;
    return;
  }
  if (!hasResult(record.status)) return;
  card.actions.replaceChildren(
    h('button', { type: 'button', onclick: () => announce('picture:open', record) }, 'Compare'));
  try {
    const url = await resultUrl(record.id);
    card.result.replaceChildren(h('img', { src: url, alt: `Anonymized ${record.name}` }));
  } catch (error) {
    forget(record.id, { keepOriginal: true });
    card.result.replaceChildren(h('p', { class: 'error', text: `${errorHeadline(error)} ${error.message}` }));
  }
}
