// A box dragged over a picture's layer (an SVG whose viewBox is the picture's full size),
// or typed in by its numbers, shared by the review screen (js/review.js) and the areas of
// an upload (js/areas.js). Pointer events, so a mouse, a pen and a finger all work; the
// box is in whole pixels of the picture, however small the picture is shown.
import { h, svg } from './dom.js';

// `size`: the picture's {width, height}; `done(box)` gets the box as dragged, however small.
export function dragBox(event, layer, size, done) {
  event.preventDefault();
  layer.setPointerCapture(event.pointerId);
  const start = pointOn(event, layer, size);
  const rect = svg('rect', { class: 'drawing-box', x: start.x, y: start.y, width: 0, height: 0 });
  layer.append(rect);
  const box = (point) => ({
    x: Math.round(Math.min(start.x, point.x)),
    y: Math.round(Math.min(start.y, point.y)),
    width: Math.round(Math.abs(point.x - start.x)),
    height: Math.round(Math.abs(point.y - start.y)),
  });
  layer.onpointermove = (move) => {
    for (const [key, value] of Object.entries(box(pointOn(move, layer, size)))) {
      rect.setAttribute(key, value);
    }
  };
  layer.onpointerup = (up) => {
    layer.onpointermove = null;
    layer.onpointerup = null;
    done(box(pointOn(up, layer, size)));
  };
}

// The pointer's place in pixels of the picture, kept inside it.
function pointOn(event, layer, size) {
  const bounds = layer.getBoundingClientRect();
  const clamp = (v, max) => Math.max(0, Math.min(max, v));
  return {
    x: clamp(((event.clientX - bounds.left) / bounds.width) * size.width, size.width),
    y: clamp(((event.clientY - bounds.top) / bounds.height) * size.height, size.height),
  };
}

// A box typed in by its numbers, in pixels of the picture (the arrow keys step them), for
// the review screen (a missed face) and the areas of an upload: the way to mark a box
// without a pointer. `noun` names the box in the words ('box', 'area') and in the ids of
// the inputs (`${noun}-x`); `minPx`: its least width and height; `extra`: a field shown
// before the button; `onAdd(box)` gets a box that fits the picture, `say(text)` what is
// wrong with one that does not; `onPreview(on)`: whether to draw `preview()` on the picture.
export function boxForm({ noun, size, minPx, shownOn, extra = null, addId, onAdd, say, onPreview }) {
  const { width, height } = size;
  const field = (name, label, value, max) => {
    const input = h('input', { type: 'number', id: `${noun}-${name}`, name, min: 0, max, step: 1,
      value, inputmode: 'numeric', required: true });
    return h('span', { class: 'box-field' }, h('label', { for: input.id, text: label }), input);
  };
  const article = /^[aeiou]/.test(noun) ? 'an' : 'a';
  const form = h('fieldset', { class: 'add-box', id: `${noun}-fieldset` },
    h('legend', { text: `Add ${article} ${noun} by its position, in pixels of the picture `
      + `(${width} × ${height}); it is drawn dotted on the ${shownOn} while you type` }),
    field('x', 'Left (x)', Math.round(width * 0.4), width - minPx),
    field('y', 'Top (y)', Math.round(height * 0.4), height - minPx),
    field('width', 'Width', Math.round(width * 0.2), width),
    field('height', 'Height', Math.round(height * 0.2), height),
    extra,
    h('button', { type: 'button', id: addId, onclick: add }, `Add this ${noun}`));
  form.addEventListener('input', () => onPreview(true));
  form.addEventListener('focusin', () => onPreview(true));
  form.addEventListener('focusout', (event) => {
    if (!form.contains(event.relatedTarget)) onPreview(false);
  });

  // The box in the form, or a sentence saying what is wrong with it (and which field).
  function read() {
    const value = (name) => Number.parseInt(form.querySelector(`[name=${name}]`).value, 10);
    const box = { x: value('x'), y: value('y'), width: value('width'), height: value('height') };
    const bad = Object.keys(box).find((k) => Number.isNaN(box[k]) || box[k] < 0);
    if (bad) return { error: `The ${bad} of the ${noun} must be a whole number, 0 or more.`, field: bad };
    if (box.width < minPx || box.height < minPx) {
      const pixels = minPx === 1 ? '1 pixel' : `${minPx} pixels`;
      return { error: `The ${noun} must be at least ${pixels} wide and high.`,
        field: box.width < minPx ? 'width' : 'height' };
    }
    if (box.x + box.width > width) {
      return { error: `The ${noun} goes past the right edge: left + width must be at most ${width}.`, field: 'width' };
    }
    if (box.y + box.height > height) {
      return { error: `The ${noun} goes past the bottom edge: top + height must be at most ${height}.`, field: 'height' };
    }
    return { box };
  }

  function add() {
    const { box, error, field: name } = read();
    for (const input of form.querySelectorAll('input')) input.removeAttribute('aria-invalid');
    if (!error) {
      onAdd(box);
      return;
    }
    const input = form.querySelector(`[name=${name}]`);
    input.setAttribute('aria-invalid', 'true');
    say(error);
    input.focus();
  }

  return { element: form, preview: () => read().box || null };
}
