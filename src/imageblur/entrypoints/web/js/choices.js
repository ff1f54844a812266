// Choices for the next uploads (issue 26): how faces are hidden and which metadata the
// result keeps, offered only as far as the server allows (GET limits `options`), and sent
// with every picture of a batch as multipart fields before the file part. A video of the
// batch goes with the mode and the metadata groups a video keeps (`videoFields`).
import { $, h } from './dom.js';

const MODE_WORDS = { blur: 'Blur', pixelate: 'Pixelate', solid: 'Solid colour' };
const DONE_WORDS = { blur: 'blurred', pixelate: 'pixelated', solid: 'filled with a solid colour' };
const GROUP_WORDS = {
  gps: 'GPS position',
  datetime: 'Date and time',
  camera_settings: 'Camera settings (exposure, lens)',
  copyright: 'Artist and copyright',
};
// What a video's container can keep (the server refuses the others for a video).
const VIDEO_GROUPS = ['gps', 'datetime'];
let offered = null; // GET limits' `options`, once the server said

// Whether the server takes this option (IMAGEBLUR_ALLOWED_OPTIONS); false until it said.
export function allows(name) {
  return Boolean(offered?.allowed.includes(name));
}

export function maxRectangles() {
  return offered?.max_rectangles ?? 0;
}

// Called with GET limits' `options` (js/limits.js): only the allowed choices are shown.
export function showChoices(options) {
  offered = options || null;
  if (!offered) return;
  const modeWords = (mode) => MODE_WORDS[mode] || mode;
  $('mode-select').replaceChildren(
    h('option', { value: '', text: `The server's choice (${modeWords(offered.mode)})` }),
    ...offered.modes.map((mode) => h('option', { value: mode, text: modeWords(mode) })),
  );
  $('metadata-groups').replaceChildren(...offered.metadata_groups.map((group) => {
    const id = `keep-${group}`;
    const box = h('input', { type: 'checkbox', id, value: group });
    box.checked = offered.keep_metadata.includes(group);
    return h('li', {}, box, h('label', { for: id, class: 'inline', text: GROUP_WORDS[group] || group }));
  }));
  $('mode-choice').hidden = !allows('mode');
  $('metadata-choice').hidden = !allows('keep_metadata');
  $('areas-choice').hidden = !allows('hide') && !allows('ignore');
  $('choices').hidden = ['mode-choice', 'metadata-choice', 'areas-choice'].every((id) => $(id).hidden);
}

// The fields for each picture of the next batch: only what differs from the server's own.
export function batchFields() {
  const fields = {};
  if (!offered) return fields;
  const mode = $('mode-select').value;
  if (allows('mode') && mode) fields.mode = mode;
  if (allows('keep_metadata')) {
    const kept = [...$('metadata-groups').querySelectorAll('input:checked')].map((box) => box.value);
    const same = kept.length === offered.keep_metadata.length
      && kept.every((group) => offered.keep_metadata.includes(group));
    if (!same) fields.keep_metadata = kept.join(',');
  }
  return fields;
}

// A batch's fields as a video takes them: the mode, and of the metadata groups chosen
// those a video keeps; areas are a picture's pixels, so they stay with pictures.
export function videoFields(fields) {
  const out = {};
  if (fields.mode) out.mode = fields.mode;
  if (fields.keep_metadata !== undefined) {
    const groups = fields.keep_metadata.split(',').filter((group) => VIDEO_GROUPS.includes(group));
    out.keep_metadata = groups.join(',');
  }
  return out;
}

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// The options a record came back with (GET picture `options`), in words; '' for none.
export function optionsWords(options) {
  if (!options) return '';
  const parts = [];
  if (options.mode) parts.push(`faces ${DONE_WORDS[options.mode] || options.mode}`);
  if (options.preset) parts.push(`preset ${options.preset}`);
  if (options.keep_metadata) {
    const groups = options.keep_metadata.map((group) => GROUP_WORDS[group] || group);
    parts.push(`metadata kept: ${groups.length ? groups.join(', ') : 'none'}`);
  }
  if (options.hide?.length) parts.push(count(options.hide.length, 'area hidden', 'areas hidden'));
  if (options.ignore?.length) parts.push(count(options.ignore.length, 'area left as it is', 'areas left as they are'));
  if (options.review) parts.push('held for review');
  if (options.callback_url) parts.push('the server calls back when done');
  return parts.length ? `Options: ${parts.join('; ')}.` : '';
}
