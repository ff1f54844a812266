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

// Headline for an ApiError; the caller shows error.message under it.
export function errorHeadline(error) {
  switch (error.status) {
    case 0:
      return 'Cannot reach the server.';
    case 400:
      return 'The server could not read this picture.';
    case 401:
      return 'The API token is missing or wrong.';
    case 404:
      return 'This picture is gone (deleted).';
    case 409:
      return 'Not ready yet.';
    case 413:
      return 'This file is too large for the server.';
    case 415:
      return 'This is not a picture the service accepts: send a JPEG, PNG, WebP, HEIC/HEIF or AVIF image.';
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
