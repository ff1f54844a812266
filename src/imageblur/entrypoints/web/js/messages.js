// What an error or a status means, in words for people. The server's own message is
// kept as the detail.

const STATUS_WORDS = {
  pending: 'Waiting for a worker…',
  processing: 'Finding and blurring faces…',
  done: 'Done',
  review: 'Done, waiting for a person to review it',
  failed: 'Failed',
};

export function statusWords(status) {
  return STATUS_WORDS[status] || status;
}

export function isFinal(status) {
  return status === 'done' || status === 'review' || status === 'failed';
}

export function hasResult(status) {
  return status === 'done' || status === 'review';
}

export function facesWords(faces) {
  if (faces === null || faces === undefined) return '';
  return faces === 1 ? '1 face hidden' : `${faces} faces hidden`;
}

// Sizes as the server's messages give them (imaging.megabytes, imaging.megapixels):
// decimal megabytes, as file managers show them.
export function megabytes(bytes) {
  return `${Number((bytes / 1e6).toPrecision(3))} MB`;
}

export function megapixels(pixels) {
  return `${Number((pixels / 1e6).toPrecision(3))} megapixels`;
}

// "12:04", the time of day of a Date, for "the last news is from 12:04".
export function clockTime(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function outageText(lastAnswer) {
  return lastAnswer
    ? `Cannot reach the server; retrying; the last news is from ${clockTime(lastAnswer)}.`
    : 'Cannot reach the server; retrying.';
}

// The server's message ("the file is larger than 25 MB, ...") as a sentence under a headline.
export function sentence(text) {
  const words = String(text || '').trim();
  if (!words) return '';
  const capital = words[0].toUpperCase() + words.slice(1);
  return /[.!?…]$/.test(capital) ? capital : `${capital}.`;
}

// Headline for an ApiError; the caller shows error.message under it. `kind`: what was
// sent or asked for, a picture or a video.
export function errorHeadline(error, kind = 'picture') {
  switch (error.status) {
    case 0:
      return 'Cannot reach the server.';
    case 400:
      return `The server could not read this ${kind}.`;
    case 401:
      return error.code === 'no_token' ? 'This server needs its API token.'
        : 'The API token is missing or wrong.';
    case 404:
      return `This ${kind} is gone (deleted).`;
    case 409:
      return 'Not ready yet.';
    case 413:
      if (error.code === 'too_many_pixels') return `This ${kind} has too many pixels for the server.`;
      return error.code === 'too_long' ? 'This video is too long for the server.'
        : 'This file is too large for the server.';
    case 415:
      // The server's message, shown under it, names the formats (GET /limits has them too).
      return `This is not a ${kind} the service accepts.`;
    case 503:
      return error.retryAfterS
        ? `The server is busy; try again in ${error.retryAfterS} s.`
        : 'The server is busy; try again shortly.';
    default:
      return `Something went wrong (${error.status}).`;
  }
}

export function isRetryable(error) {
  return error.status === 0 || error.status === 503;
}
