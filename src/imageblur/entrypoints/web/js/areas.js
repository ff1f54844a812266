// Areas of one picture (issue 26): rectangles to hide whatever is found there (and, where
// the server allows `ignore`, to leave as they are), drawn on a preview with the pointer
// or typed in by their numbers from the keyboard, as the review screen's box form does
// (js/review.js); sent with that picture as `hide` / `ignore` JSON. Their pixels are
// those of the upright picture: the browser shows a picture upright (its EXIF orientation
// applied), as the server reads it, and the layer's viewBox is the picture's full size,
// so a preview shown smaller still gives full pixels.
import { boxForm, dragBox } from './boxes.js';
import { allows, maxRectangles } from './choices.js';
import { $, h, svg } from './dom.js';
import { addFiles } from './uploads.js';

const MIN_DRAWN_PX = 4; // a smaller drag is a slip of the pointer, not an area
const KIND_WORDS = { hide: 'hidden', ignore: 'left as it is' };
let picture = null; // {file, url, width, height}
let areas = []; // {kind, x, y, width, height}
let previewing = false;
let typed = null; // the form that adds an area by its numbers

export function initAreas() {
  $('areas-open').addEventListener('click', () => showAreas($('areas').hidden));
  $('areas-file').addEventListener('change', () => {
    const file = $('areas-file').files[0];
    if (file) load(file);
  });
  $('areas-cancel').addEventListener('click', () => {
    showAreas(false);
    $('areas-open').focus();
  });
  $('areas-send').addEventListener('click', send);
  $('areas-draw').addEventListener('click', toggleDrawing);
}

function showAreas(on) {
  $('areas-sent').textContent = '';
  $('areas').hidden = !on;
  $('areas-open').setAttribute('aria-expanded', String(on));
  if (on) $('areas-file').focus();
  else reset();
}

// `keepFile`: another picture was just chosen, and the picker shows its name.
function reset({ keepFile = false } = {}) {
  if (picture) URL.revokeObjectURL(picture.url);
  picture = null;
  areas = [];
  if (!keepFile) $('areas-file').value = '';
  $('areas-work').hidden = true;
  $('areas-message').textContent = '';
  if ($('areas-draw').getAttribute('aria-pressed') === 'true') toggleDrawing();
}

function load(file) {
  reset({ keepFile: true });
  const url = URL.createObjectURL(file);
  const image = $('areas-image');
  image.onload = () => {
    picture = { file, url, width: image.naturalWidth, height: image.naturalHeight };
    image.alt = `Preview of ${file.name}`;
    typed = areaForm();
    $('areas-form').replaceChildren(typed.element);
    $('areas-work').hidden = false;
    render();
    $('areas-message').textContent = `${file.name} is shown, ${picture.width} × ${picture.height} `
      + 'pixels: add areas by their numbers or draw them, then upload it.';
  };
  image.onerror = () => {
    URL.revokeObjectURL(url);
    $('areas-message').textContent = `This browser cannot show ${file.name}, so no areas can be `
      + 'marked on it; upload it with the file picker below instead.';
  };
  image.src = url;
}

// An area by its numbers (js/boxes.js), drawn dotted on the preview while the form has
// focus.
function areaForm() {
  const kinds = allows('ignore') ? h('span', { class: 'box-field' },
    h('label', { for: 'area-kind', text: 'The area is' }),
    h('select', { id: 'area-kind', name: 'kind' },
      ...['hide', 'ignore'].filter(allows).map((kind) => h('option', { value: kind, text: KIND_WORDS[kind] })))) : null;
  return boxForm({
    noun: 'area',
    size: picture,
    minPx: 1,
    shownOn: 'preview',
    extra: kinds,
    addId: 'area-add',
    onAdd: (box) => {
      add({ kind: kindChosen(), ...box });
      previewing = false; // drawn as added now; the next edit previews again
      render();
    },
    say: (text) => {
      $('areas-message').textContent = text;
    },
    onPreview: (on) => {
      previewing = on;
      render();
    },
  });
}

function kindChosen() {
  if (allows('hide') && !allows('ignore')) return 'hide';
  return $('area-kind')?.value || 'ignore';
}

function add(area) {
  const same = areas.filter((a) => a.kind === area.kind).length;
  if (same >= maxRectangles()) {
    $('areas-message').textContent = `At most ${maxRectangles()} areas ${KIND_WORDS[area.kind]}.`;
    return;
  }
  areas.push(area);
  render();
  $('areas-message').textContent = `Area ${areas.length} added, ${KIND_WORDS[area.kind]}: `
    + `${area.width} × ${area.height} px at (${area.x}, ${area.y}).`;
}

function render() {
  if (!picture) return;
  const focusedId = $('areas-list').contains(document.activeElement) ? document.activeElement.id : null;
  $('areas-list').replaceChildren(...areas.map((area, i) => h('li', {},
    `Area ${i + 1}, ${KIND_WORDS[area.kind]}: ${area.width} × ${area.height} px at (${area.x}, ${area.y}) `,
    h('button', { type: 'button', class: 'secondary', id: `remove-area-${i + 1}`,
      onclick: () => remove(i) }, `Remove area ${i + 1}`))));
  if (focusedId) $(focusedId)?.focus();
  const layer = $('areas-layer');
  layer.setAttribute('viewBox', `0 0 ${picture.width} ${picture.height}`);
  layer.setAttribute('preserveAspectRatio', 'none');
  const preview = previewing ? typed.preview() : null;
  layer.replaceChildren(...areas.map((area) => svg('rect', {
    x: area.x, y: area.y, width: area.width, height: area.height,
    class: area.kind === 'hide' ? 'area-hide' : 'area-ignore',
  })), ...(preview ? [svg('rect', { class: 'preview-box', ...preview })] : []));
}

// Focus goes to the next area's Remove (the one now in its place), else the form.
function remove(i) {
  areas.splice(i, 1);
  render();
  $('areas-message').textContent = `Area ${i + 1} removed.`;
  ($(`remove-area-${Math.min(i + 1, areas.length)}`) || $('area-add')).focus();
}

// Drawing: js/boxes.js.
function toggleDrawing() {
  const layer = $('areas-layer');
  const button = $('areas-draw');
  const on = button.getAttribute('aria-pressed') !== 'true';
  button.setAttribute('aria-pressed', String(on));
  layer.classList.toggle('drawing', on);
  layer.onpointerdown = on ? (event) => startBox(event, layer) : null;
}

function startBox(event, layer) {
  dragBox(event, layer, picture, (drawn) => {
    if (drawn.width >= MIN_DRAWN_PX && drawn.height >= MIN_DRAWN_PX) add({ kind: kindChosen(), ...drawn });
    else render();
  });
}

function send() {
  if (!picture) return;
  const fields = {};
  for (const kind of ['hide', 'ignore']) {
    const chosen = areas.filter((a) => a.kind === kind)
      .map(({ x, y, width, height }) => ({ x, y, width, height }));
    if (chosen.length) fields[kind] = JSON.stringify(chosen);
  }
  addFiles([picture.file], fields);
  const said = `${picture.file.name} sent with ${areas.length === 1 ? '1 area' : `${areas.length} areas`}; `
    + 'its card is below.';
  showAreas(false);
  $('areas-open').focus();
  $('areas-sent').textContent = said;
}
