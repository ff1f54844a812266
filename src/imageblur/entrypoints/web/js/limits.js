// What an upload may be, as the server says (GET limits, public): stated under the drop
// zone, given to the file picker, and checked here before a file is sent. Asked again
// until the server answers; until then the page sends anyway and the server checks.
import { getJson } from './api.js';
import { showBatches } from './batches.js';
import { showChoices } from './choices.js';
import { $, delay } from './dom.js';
import { megabytes, megapixels } from './messages.js';
import { showVideos, withVideos } from './videos.js';

const RETRY_MAX_MS = 30_000;
let limits = null;
let firstTry = null;

// Resolves to the limits, or to null when the first attempt failed (then retried).
export function whenLimits() {
  if (!firstTry) firstTry = load();
  return firstTry;
}

async function load() {
  try {
    return show(await getJson('limits', { timeoutMs: 10_000 }));
  } catch {
    retry();
    return null;
  }
}

async function retry() {
  for (let waitMs = 1000; !limits; waitMs = Math.min(waitMs * 2, RETRY_MAX_MS)) {
    await delay(waitMs);
    try {
      show(await getJson('limits', { timeoutMs: 10_000 }));
    } catch {
      // Still no answer: the next try waits longer.
    }
  }
}

function show(body) {
  limits = body;
  $('limits').textContent = `Accepted: ${body.accepted}; up to ${megabytes(body.max_upload_bytes)}`
    + ` and ${megapixels(body.max_pixels)} each.`;
  const accept = body.formats.flatMap((f) => [...f.content_types, ...f.extensions]);
  showVideos(body.videos);
  showChoices(body.options);
  showBatches(body.batches === true);
  $('file-input').setAttribute('accept', withVideos(accept).join(','));
  return body;
}

function extension(name) {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(dot).toLowerCase() : '';
}

// Why the server would refuse this file, from what the browser can tell without sending
// it: {headline, detail}, or null when it may go.
export async function refusal(file) {
  const known = await whenLimits();
  if (!known) return null;
  const type = file.type.toLowerCase();
  const ext = extension(file.name);
  const named = type || ext; // a file with neither may still be a picture: the server judges
  if (named && !known.formats.some((f) => f.content_types.includes(type) || f.extensions.includes(ext))) {
    return { headline: 'This is not a picture the service accepts.', detail: `Send ${known.accepted}.` };
  }
  if (file.size > known.max_upload_bytes) {
    return {
      headline: 'This file is too large for the server.',
      detail: `It is ${megabytes(file.size)}; the server accepts at most ${megabytes(known.max_upload_bytes)}.`,
    };
  }
  const size = await pictureSize(file);
  if (size && size.width * size.height > known.max_pixels) {
    return {
      headline: 'This picture has too many pixels for the server.',
      detail: `It is ${size.width} x ${size.height} pixels (${megapixels(size.width * size.height)}); `
        + `the server accepts at most ${megapixels(known.max_pixels)}.`,
    };
  }
  return null;
}

// Width and height from the browser's own reading of the file; null for a format it
// cannot show (HEIC, say): the server checks those.
function pictureSize(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const image = new Image();
    const done = (size) => {
      URL.revokeObjectURL(url);
      resolve(size);
    };
    image.onload = () => done({ width: image.naturalWidth, height: image.naturalHeight });
    image.onerror = () => done(null);
    image.src = url;
  });
}
