// A box dragged over a picture's layer (an SVG whose viewBox is the picture's full size),
// shared by the review screen (js/review.js) and the areas of an upload (js/areas.js).
// Pointer events, so a mouse, a pen and a finger all work; the box is in whole pixels of
// the picture, however small the picture is shown.
import { svg } from './dom.js';

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
