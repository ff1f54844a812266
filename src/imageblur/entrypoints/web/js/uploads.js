// Upload: drop or pick several files; each gets a card with its upload progress, then its
// status, live, until done, review or failed. A card's status is a live region that names
// its file and is written only when its words change, so each change is heard once.
import {
  ApiError, getJson, isUnreachable, lastAnswerTime, uploadFile,
} from './api.js';
import { batchFields, optionsWords, videoFields } from './choices.js';
import { $, delay, formatBytes, h, removeKeepingFocus } from './dom.js';
import { refusal, whenLimits } from './limits.js';
import {
  errorHeadline, facesWords, hasResult, isFinal, isRetryable, outageText, sentence,
  statusWords,
} from './messages.js';
import { announce, forget, on, rememberOriginal, resultUrl } from './pictures.js';
import {
  looksLikeVideo, PROGRESS_SAY_MS, progressWords, videoRefusal, videosOn,
} from './videos.js';

const POLL_MS = 1000;
// A poll the server accepted but does not answer counts as no answer after this.
const POLL_TIMEOUT_MS = 5000;
const POLL_LIMIT_MS = 15 * 60 * 1000;
const BUSY_RETRIES = 3;
// A live region filled in the same task that inserts it is not read out: it is filled
// this long after.
const ANNOUNCE_DELAY_MS = 100;
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
  whenLimits(); // stated on the page before any upload (and whether videos are taken)
}

// Every picture of a batch goes with the same choices, as they stood when it was picked;
// `fields` adds more (one picture's areas, js/areas.js).
export function addFiles(files, fields = {}) {
  const chosen = { ...batchFields(), ...fields };
  for (const file of files) {
    const card = makeCard(file, chosen);
    $('uploads').prepend(card.element);
    start(card);
  }
}

async function start(card) {
  await delay(ANNOUNCE_DELAY_MS);
  await whenLimits();
  // A video goes as one only when the server takes them; else it is judged as a picture.
  if (videosOn() && looksLikeVideo(card.file)) card.kind = 'video';
  const refused = card.kind === 'video' ? videoRefusal(card.file) : await refusal(card.file);
  if (refused) showRefusal(card, refused.headline, refused.detail, false);
  else send(card);
}

function makeCard(file, fields) {
  const card = {
    file,
    fields,
    kind: 'picture',
    id: null,
    statusText: null,
    saidAt: 0, // when a video's progress was last read out
    progress: h('progress', { max: 100, value: 0, 'aria-label': `Upload of ${file.name}` }),
    status: h('p', { class: 'status', role: 'status' }),
    error: h('p', { class: 'error', role: 'alert', hidden: true }),
    options: h('p', { class: 'meta options', hidden: true }),
    result: h('div', { class: 'thumb' }),
    actions: h('div', { class: 'toolbar' }),
  };
  card.element = h('li', { class: 'card' },
    h('p', { class: 'file-name', text: file.name }),
    h('p', { class: 'meta', text: formatBytes(file.size) }),
    card.progress, card.status, card.options, card.error, card.result, card.actions);
  return card;
}

// The file's name is part of what is read out (hidden from sight: the card shows it).
function named(card) {
  return h('span', { class: 'visually-hidden', text: `${card.file.name}: ` });
}

function setStatus(card, text) {
  if (card.statusText === text) return;
  card.statusText = text;
  card.status.replaceChildren(named(card), text);
}

async function send(card) {
  card.error.hidden = true;
  card.actions.replaceChildren();
  setStatus(card, 'Uploading…');
  for (let attempt = 0; ; attempt += 1) {
    try {
      const fields = card.kind === 'picture' ? card.fields : videoFields(card.fields);
      const record = await uploadFile(card.file, (share) => {
        card.progress.value = Math.round(share * 100);
      }, card.kind, fields);
      card.progress.value = 100;
      card.id = record.id;
      cards.set(record.id, card);
      card.element.dataset.id = record.id;
      card.element.dataset.kind = card.kind;
      if (card.kind === 'picture') rememberOriginal(record.id, card.file);
      announce('picture:changed', record.id);
      await follow(card, record);
      return;
    } catch (error) {
      const busy = error instanceof ApiError && error.status === 503;
      if (busy && attempt < BUSY_RETRIES) {
        const waitS = error.retryAfterS || 2;
        setStatus(card, `The server is busy; retrying in ${waitS} s…`);
        await delay(waitS * 1000);
        continue;
      }
      showError(card, error);
      return;
    }
  }
}

function showError(card, error) {
  const apiError = error instanceof ApiError ? error : new ApiError(0, 'network', error.message);
  showRefusal(card, errorHeadline(apiError, card.kind), sentence(apiError.message),
    isRetryable(apiError));
}

function showRefusal(card, headline, detail, retryable) {
  card.progress.hidden = true;
  setStatus(card, 'Not uploaded');
  card.error.replaceChildren(named(card), h('strong', { text: headline }), ' ',
    h('span', { text: detail }));
  card.error.hidden = false;
  const name = card.file.name;
  const buttons = [h('button', { type: 'button', class: 'secondary', 'aria-label': `Dismiss ${name}`,
    onclick: () => removeKeepingFocus(card.element, $('file-input')) }, 'Dismiss')];
  if (retryable) {
    buttons.unshift(h('button', { type: 'button', 'aria-label': `Retry ${name}`,
      onclick: () => send(card) }, 'Retry'));
  }
  card.actions.replaceChildren(...buttons);
}

// Poll the record until it reaches a final status (bounded), then show the result. While
// the server cannot be reached the card says so, with the time of its last answer, until
// an answer comes.
async function follow(card, record) {
  const started = Date.now();
  let current = record;
  const path = `${card.kind}/${encodeURIComponent(card.id)}`;
  setStatus(card, statusWords(current.status));
  while (!isFinal(current.status) && cards.has(card.id)) {
    if (Date.now() - started > POLL_LIMIT_MS) {
      setStatus(card, 'Still not finished; see the history later.');
      return;
    }
    await delay(POLL_MS);
    try {
      current = await getJson(path, { timeoutMs: POLL_TIMEOUT_MS });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return; // deleted meanwhile
      setStatus(card, isUnreachable(error) ? outageText(lastAnswerTime())
        : `${errorHeadline(error, card.kind)} Retrying…`);
      continue;
    }
    if (current.progress) showProgress(card, current.progress);
    else if (!isFinal(current.status)) setStatus(card, statusWords(current.status));
  }
  if (cards.has(card.id)) await showFinal(card, current);
}

// A video's frames: the bar moves on every poll, the words (a live region) change at most
// every PROGRESS_SAY_MS, so a screen reader is not talked over once a second.
function showProgress(card, progress) {
  const bar = card.progress; // the upload's bar, now counting frames
  bar.setAttribute('aria-label', `Frames done in ${card.file.name}`);
  bar.max = Math.max(progress.frames_total, 1);
  bar.value = Math.min(progress.frames_done, bar.max);
  const now = Date.now();
  if (card.statusText?.startsWith('Hiding faces') && now - card.saidAt < PROGRESS_SAY_MS) return;
  card.saidAt = now;
  setStatus(card, progressWords(progress));
}

async function showFinal(card, record) {
  card.progress.hidden = true;
  card.element.dataset.status = record.status;
  announce('picture:changed', record.id);
  const faces = facesWords(record.faces);
  setStatus(card, faces ? `${statusWords(record.status)}: ${faces}` : statusWords(record.status));
  // As the server recorded them, not as asked: what this result was made with.
  card.options.textContent = optionsWords(record.options);
  card.options.hidden = !card.options.textContent;
  if (record.status === 'failed') {
    card.error.replaceChildren(named(card), h('strong', { text: 'The server could not anonymize it.' }),
      ' ', h('span', { text: record.error || 'no reason given' }));
    card.error.hidden = false;
    return;
  }
  if (!hasResult(record.status)) return;
  if (card.kind === 'video') {
    card.actions.replaceChildren(h('button', { type: 'button', 'aria-label': `Play ${record.name}`,
      onclick: () => announce('video:open', record) }, 'Play'));
    return;
  }
  card.actions.replaceChildren(h('button', { type: 'button', 'aria-label': `Compare ${record.name}`,
    onclick: () => announce('picture:open', record) }, 'Compare'));
  try {
    const url = await resultUrl(record.id);
    card.result.replaceChildren(h('img', { src: url, alt: `Anonymized ${record.name}` }));
  } catch (error) {
    forget(record.id, { keepOriginal: true });
    card.result.replaceChildren(h('p', { class: 'error', text: `${errorHeadline(error)} ${error.message}` }));
  }
}
