// The result view: the anonymized picture, the hidden regions drawn over it on demand,
// a before/after slider whose "before" is the person's own file (never fetched from the
// server), and a download button. A video's result plays in a <video> element instead,
// from its playback URL (signed: a <video> element cannot send the bearer header).
import { getJson } from './api.js';
import { optionsWords } from './choices.js';
import { $, focusQuietly, formatBytes, svg } from './dom.js';
import { errorHeadline, facesWords, statusWords } from './messages.js';
import { forget, on, originalFile, resultUrl } from './pictures.js';

let current = null; // the record shown
let beforeUrl = null;
let opener = null; // the control that opened the view: Close gives focus back to it
let regionsSource = null; // set by an extension that draws its own regions (the review)
const extensions = [];

// A later module (the review screen) adds itself here: called with the record and the
// view's parts each time a picture is shown.
export function addResultExtension(extension) {
  extensions.push(extension);
}

export function initResult() {
  $('result-close').addEventListener('click', close);
  $('compare-range').addEventListener('input', () => setSplit($('compare-range').value));
  $('compare-file').addEventListener('change', () => {
    const file = $('compare-file').files[0];
    if (file) showBefore(file);
  });
  $('regions-button').addEventListener('click', toggleRegions);
  on('picture:open', (record) => open(record));
  on('video:open', (record) => openVideo(record));
  $('result-video').addEventListener('error', renewPlayback);
  on('picture:deleted', (id) => {
    if (current && current.id === id) close();
  });
}

export function currentRecord() {
  return current;
}

// The review screen draws its own regions (with the reviewer's unsaved choices): the
// "Show hidden regions" button then shows those, not the server's.
export function setRegionsSource(draw) {
  regionsSource = draw;
}

function show(record) {
  const focused = document.activeElement;
  if (focused && focused !== document.body && !$('result').contains(focused)) opener = focused;
  current = record;
  resetView();
  $('result').hidden = false;
  showFacts(record);
  $('result').scrollIntoView({ block: 'start' });
  $('result-title').focus({ preventScroll: true });
}

async function open(record) {
  show(record);
  $('figure').hidden = false;
  if (!(await showAfter(record))) return;
  const file = originalFile(record.id);
  if (file) showBefore(file);
  else {
    $('result-note').textContent = 'The original stays on your computer: choose it to compare.';
    $('compare-pick').hidden = false;
  }
  // The page is served by the API it calls, so the regions and review routes are there.
  $('regions-button').hidden = false;
  for (const extension of extensions) extension({ record, container: $('result-extensions') });
}

// The picture shown changed on the server (a review saved or approved): show its new
// state in the same view, leaving focus and the local "before" where they are.
export async function refreshResult(record) {
  if (current?.id !== record.id) return;
  current = record;
  showFacts(record);
  showRegions(false);
  if (!(await showAfter(record))) return;
  for (const extension of extensions) {
    extension({ record, container: $('result-extensions'), again: true });
  }
}

function showFacts(record) {
  $('result-name').textContent = record.name;
  const seconds = record.duration_s ? `${Number(record.duration_s.toFixed(1))} s` : '';
  $('result-meta').textContent = [statusWords(record.status), facesWords(record.faces),
    `${record.width} × ${record.height}`, seconds, formatBytes(record.bytes)]
    .filter(Boolean).join(' · ');
  $('result-options').textContent = optionsWords(record.options);
}

// A video: the record is asked for again, for a playback URL that has not expired (they
// last minutes), then played from it; the download link is the same URL.
async function openVideo(record) {
  show(record);
  $('figure').hidden = true;
  try {
    const fresh = await getJson(`video/${encodeURIComponent(record.id)}`);
    if (current !== record) return;
    current = fresh;
    showFacts(fresh);
    if (!fresh.playback_url) throw new Error('it has no result (any more)');
    const url = new URL(fresh.playback_url, document.baseURI).href;
    const video = $('result-video');
    video.setAttribute('aria-label', `The anonymized ${fresh.name}`);
    video.src = url;
    video.hidden = false;
    const link = $('download-link');
    link.href = url;
    link.download = downloadName(fresh.name.replace(/\.[^.]*$/, '') + extensionOf(fresh));
    link.setAttribute('aria-label', `Download the anonymized ${fresh.name}`);
    link.hidden = false;
  } catch (error) {
    $('result-note').textContent = `${errorHeadline(error, 'video')} ${error.message}`;
  }
}

// The result's own container (an MOV comes back as MP4).
function extensionOf(record) {
  return record.content_type === 'video/webm' ? '.webm' : '.mp4';
}

// The playback URL expired while the video was open (a seek after minutes): ask for a
// fresh one once, and go on from where it was.
async function renewPlayback() {
  const video = $('result-video');
  const record = current;
  if (!record || record.kind !== 'video' || video.dataset.renewed === record.id) return;
  video.dataset.renewed = record.id;
  const at = video.currentTime;
  try {
    const fresh = await getJson(`video/${encodeURIComponent(record.id)}`);
    if (current !== record || !fresh.playback_url) return;
    video.src = new URL(fresh.playback_url, document.baseURI).href;
    video.currentTime = at;
    $('download-link').href = video.src;
  } catch (error) {
    $('result-note').textContent = `${errorHeadline(error, 'video')} ${error.message}`;
  }
}

// The anonymized picture and its download link; false when it could not be fetched (or
// another picture was opened meanwhile).
async function showAfter(record) {
  try {
    const url = await resultUrl(record.id);
    if (current !== record) return false;
    $('after-image').src = url;
    const link = $('download-link');
    link.href = url;
    link.download = downloadName(record.name);
    link.setAttribute('aria-label', `Download the anonymized ${record.name}`);
    link.hidden = false;
    return true;
  } catch (error) {
    forget(record.id, { keepOriginal: true });
    $('result-note').textContent = `${errorHeadline(error)} ${error.message}`;
    return false;
  }
}

function resetView() {
  if (beforeUrl) URL.revokeObjectURL(beforeUrl);
  beforeUrl = null;
  for (const id of ['before-image', 'divider', 'regions', 'regions-legend', 'compare-controls',
    'compare-pick', 'download-link', 'regions-button']) $(id).toggleAttribute('hidden', true);
  $('after-image').removeAttribute('src');
  const video = $('result-video');
  video.pause();
  video.removeAttribute('src');
  video.removeAttribute('data-renewed');
  video.hidden = true;
  video.load(); // lets go of the previous video
  $('before-image').removeAttribute('src');
  $('compare-file').value = '';
  $('result-note').textContent = '';
  showRegions(false);
  regionsSource = null;
  // A review screen may have left the layer drawing: the next one starts afresh.
  $('regions').classList.remove('drawing');
  $('regions').onpointerdown = null;
  $('result-extensions').replaceChildren();
}

// Focus goes back to the control that opened the view, or (rebuilt meanwhile) the same
// picture's control in the history or its upload card; focus outside the view stays.
function close() {
  const hadFocus = $('result').contains(document.activeElement)
    || document.activeElement === document.body;
  const id = current?.id;
  resetView();
  current = null;
  $('result').hidden = true;
  if (!hadFocus) return;
  const again = id && (document.querySelector(`#history [data-id="${CSS.escape(id)}"] [data-action="view"]`)
    || document.querySelector(`#uploads [data-id="${CSS.escape(id)}"] .toolbar button`));
  const target = opener?.isConnected ? opener : again;
  opener = null;
  if (target) target.focus();
  else focusQuietly($('history-title'));
}

function downloadName(name) {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? `${name.slice(0, dot)}-blurred${name.slice(dot)}` : `${name}-blurred`;
}

// The browser shows the person's own file as the "before"; where it cannot (HEIC, say)
// it says so instead of offering a slider.
function showBefore(file) {
  const image = $('before-image');
  if (beforeUrl) URL.revokeObjectURL(beforeUrl);
  beforeUrl = URL.createObjectURL(file);
  image.onload = () => {
    $('compare-pick').hidden = true;
    $('result-note').textContent = 'Slide to compare your original (left) with the anonymized picture (right).';
    image.hidden = false;
    $('divider').hidden = false;
    $('compare-controls').hidden = false;
    setSplit($('compare-range').value);
  };
  image.onerror = () => {
    image.hidden = true;
    $('compare-controls').hidden = true;
    $('divider').hidden = true;
    $('result-note').textContent = `This browser cannot show ${file.type || 'this kind of file'} (${file.name}), so there is no before/after comparison.`;
  };
  image.src = beforeUrl;
}

// The "before" covers the left `percent` of the picture.
function setSplit(percent) {
  $('before-image').style.clipPath = `inset(0 ${100 - Number(percent)}% 0 0)`;
  $('divider').style.left = `${percent}%`;
  $('compare-range').setAttribute('aria-valuetext',
    `${percent}% original, ${100 - Number(percent)}% anonymized`);
}

// The toggle says what the layer shows: pressed exactly while regions are drawn.
function showRegions(on) {
  const button = $('regions-button');
  button.setAttribute('aria-pressed', String(on));
  button.textContent = on ? 'Hide the regions' : 'Show hidden regions';
  $('regions').toggleAttribute('hidden', !on); // an SVG element: no `hidden` property
  $('regions-legend').hidden = !on;
  if (!on) $('regions').replaceChildren();
}

async function toggleRegions() {
  if ($('regions-button').getAttribute('aria-pressed') === 'true') {
    showRegions(false);
    return;
  }
  if (regionsSource) {
    regionsSource();
    return;
  }
  const record = current;
  try {
    const body = await getJson(`picture/${encodeURIComponent(record.id)}/regions`);
    if (current !== record) return;
    drawRegions(record, body.regions || []);
  } catch (error) {
    $('result-note').textContent = `${errorHeadline(error)} ${error.message}`;
  }
}

const HATCH_ID = 'hidden-hatch';

// Hidden regions are hatched (and solid-outlined), shown ones only outlined: told apart
// by pattern, not colour alone; uncertain candidates are dashed either way.
export function drawRegions(record, regions, extra = []) {
  const layer = $('regions');
  layer.setAttribute('viewBox', `0 0 ${record.width} ${record.height}`);
  layer.setAttribute('preserveAspectRatio', 'none');
  layer.replaceChildren(hatch(record), ...regions.map((region) => svg('rect', {
    x: region.x, y: region.y, width: region.width, height: region.height,
    class: [region.hidden ? 'hidden-region' : 'shown-region', region.uncertain ? 'uncertain' : '']
      .join(' ').trim(),
    fill: region.hidden ? `url(#${HATCH_ID})` : 'none',
  })), ...extra);
  showRegions(true);
  $('regions-legend').textContent = legend(regions);
}

function hatch(record) {
  const size = Math.max(8, Math.round(Math.max(record.width, record.height) / 80));
  const pattern = svg('pattern', { id: HATCH_ID, patternUnits: 'userSpaceOnUse',
    width: size, height: size, patternTransform: 'rotate(45)' });
  // A line, not a rect: the regions drawn are the layer's only rects.
  pattern.append(svg('line', { class: 'hatch', x1: 0, y1: 0, x2: 0, y2: size,
    'stroke-width': size / 3 }));
  const defs = svg('defs');
  defs.append(pattern);
  return defs;
}

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function legend(regions) {
  const hidden = regions.filter((r) => r.hidden).length;
  const shown = regions.length - hidden;
  const uncertain = regions.filter((r) => r.uncertain).length;
  return `${count(regions.length, 'region', 'regions')} drawn: `
    + `${count(hidden, 'hidden region', 'hidden regions')} (hatched, solid outline: blurred), `
    + `${count(shown, 'shown region', 'shown regions')} (outline only: not blurred); `
    + `${count(uncertain, 'uncertain candidate', 'uncertain candidates')} among them (dashed outline).`;
}
