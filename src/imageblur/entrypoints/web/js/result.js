// The result view: the anonymized picture, the hidden regions drawn over it on demand,
// a before/after slider whose "before" is the person's own file (never fetched from the
// server), and a download button.
import { getJson } from './api.js';
import { $, formatBytes, svg } from './dom.js';
import { errorHeadline, facesWords, statusWords } from './messages.js';
import { forget, on, originalFile, resultUrl } from './pictures.js';

let current = null; // the record shown
let beforeUrl = null;
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
  on('picture:deleted', (id) => {
    if (current && current.id === id) close();
  });
}

export function currentRecord() {
  return current;
}

async function open(record) {
  current = record;
  resetView();
  $('result').hidden = false;
  $('result-name').textContent = record.name;
  $('result-meta').textContent = [statusWords(record.status), facesWords(record.faces),
    `${record.width} × ${record.height}`, formatBytes(record.bytes)].filter(Boolean).join(' · ');
  $('result').scrollIntoView({ block: 'start' });
  $('result-title').focus({ preventScroll: true });
  try {
    const url = await resultUrl(record.id);
    if (current !== record) return;
    $('after-image').src = url;
    const link = $('download-link');
    link.href = url;
    link.download = downloadName(record.name);
    link.hidden = false;
  } catch (error) {
    forget(record.id, { keepOriginal: true });
    $('result-note').textContent = `${errorHeadline(error)} ${error.message}`;
    return;
  }
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

function resetView() {
  if (beforeUrl) URL.revokeObjectURL(beforeUrl);
  beforeUrl = null;
  for (const id of ['before-image', 'divider', 'regions', 'regions-legend', 'compare-controls',
    'compare-pick', 'download-link', 'regions-button']) $(id).toggleAttribute('hidden', true);
  $('after-image').removeAttribute('src');
  $('before-image').removeAttribute('src');
  $('compare-file').value = '';
  $('result-note').textContent = '';
  $('regions-button').setAttribute('aria-pressed', 'false');
  $('regions-button').textContent = 'Show hidden regions';
  $('regions').replaceChildren();
  // A review screen may have left the layer drawing: the next one starts afresh.
  $('regions').classList.remove('drawing');
  $('regions').onpointerdown = null;
  $('result-extensions').replaceChildren();
}

function close() {
  resetView();
  current = null;
  $('result').hidden = true;
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
}

async function toggleRegions() {
  const button = $('regions-button');
  const shown = button.getAttribute('aria-pressed') === 'true';
  if (shown) {
    $('regions').toggleAttribute('hidden', true); // an SVG element: no `hidden` property
    $('regions-legend').hidden = true;
    button.setAttribute('aria-pressed', 'false');
    button.textContent = 'Show hidden regions';
    return;
  }
  const record = current;
  try {
    const body = await getJson(`picture/${encodeURIComponent(record.id)}/regions`);
    if (current !== record) return;
    drawRegions(record, body.regions || []);
    button.setAttribute('aria-pressed', 'true');
    button.textContent = 'Hide the regions';
  } catch (error) {
    $('result-note').textContent = `${errorHeadline(error)} ${error.message}`;
  }
}

export function drawRegions(record, regions) {
  const layer = $('regions');
  layer.setAttribute('viewBox', `0 0 ${record.width} ${record.height}`);
  layer.setAttribute('preserveAspectRatio', 'none');
  layer.replaceChildren(...regions.map((region) => svg('rect', {
    x: region.x, y: region.y, width: region.width, height: region.height,
    class: [region.hidden ? 'hidden-region' : 'shown-region', region.uncertain ? 'uncertain' : '']
      .join(' ').trim(),
  })));
  layer.toggleAttribute('hidden', false);
  const hidden = regions.filter((r) => r.hidden).length;
  const uncertain = regions.filter((r) => r.uncertain).length;
  const legend = $('regions-legend');
  legend.textContent = `${hidden} hidden region(s) in solid outline; ${uncertain} uncertain candidate(s) dashed.`;
  legend.hidden = false;
}
