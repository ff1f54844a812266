// Videos, when the server takes them (IMAGEBLUR_VIDEO): GET limits (js/limits.js) then
// says what a video may be, under `videos`; it is null when they are off, and then the
// page offers pictures only and says nothing about videos.
import { $ } from './dom.js';
import { megabytes } from './messages.js';

// What the file picker offers besides the pictures; the server judges the bytes.
const VIDEO_TYPES = ['video/mp4', 'video/quicktime', 'video/webm'];
const VIDEO_EXTENSIONS = ['.mp4', '.m4v', '.mov', '.webm'];
// A video's progress words are read out at most this often; its bar moves on every poll.
export const PROGRESS_SAY_MS = 15_000;

let limits = null; // GET limits' `videos`, once it said they are on

// Called with GET limits' answer: the upload section then offers videos, or not.
export function showVideos(videos) {
  limits = videos || null;
  $('upload').dataset.videos = limits ? 'on' : 'off'; // the answer, for the browser tests
  if (!limits) return;
  $('upload-title').textContent = 'Upload pictures and videos';
  $('drop-words').textContent = 'Drop pictures or videos here, or choose them:';
  $('choose-words').textContent = 'Choose pictures or videos:';
  $('file-label').textContent = 'Pictures or videos to anonymize';
  $('video-note').textContent = `Videos: ${limits.accepted}; up to ${megabytes(limits.max_bytes)}`
    + ` and ${minutes(limits.max_seconds)} each.`;
  $('video-note').hidden = false;
}

// The picker's accept list with the videos added, when they are on.
export function withVideos(accept) {
  return limits ? [...accept, ...VIDEO_TYPES, ...VIDEO_EXTENSIONS] : accept;
}

export function videosOn() {
  return limits !== null;
}

export function looksLikeVideo(file) {
  const type = (file.type || '').toLowerCase();
  if (type.startsWith('video/')) return true;
  const dot = file.name.lastIndexOf('.');
  return dot > 0 && VIDEO_EXTENSIONS.includes(file.name.slice(dot).toLowerCase());
}

// Why the server would refuse this video, from its size; null when it may go (the
// server checks its length and frame size from its header).
export function videoRefusal(file) {
  if (!limits || file.size <= limits.max_bytes) return null;
  return {
    headline: 'This file is too large for the server.',
    detail: `It is ${megabytes(file.size)}; the server accepts videos of at most ${megabytes(limits.max_bytes)}.`,
  };
}

function minutes(seconds) {
  if (seconds < 120) return `${seconds} s`;
  return `${Number((seconds / 60).toPrecision(3))} minutes`;
}

// "Hiding faces: 120 of 480 frames, about 20 s left", from the record's `progress`.
export function progressWords(progress) {
  const words = `Hiding faces: ${progress.frames_done} of ${progress.frames_total} frames`;
  const eta = progress.eta_s;
  return eta === null || eta === undefined ? words : `${words}, about ${Math.ceil(eta)} s left`;
}
