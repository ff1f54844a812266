// Every call to the API: URLs relative to where the page is served (so it works under
// IMAGEBLUR_ROOT_PATH), the bearer token when there is one, and errors as ApiError
// with the server's own message. A 401 brings the token prompt back, then retries.
// It also keeps track of whether the server can be reached at all: 'server:down' and
// 'server:up' events on the document, and the time of the last answer.
import { askForToken, forgetToken, getToken } from './token.js';

// No answer, or a proxy saying the server behind it did not answer.
const UNREACHABLE = new Set([0, 502, 504]);
const NO_ANSWER = 'no answer came back: the server or the network may be down';
let lastAnswer = null; // Date of the last answer the server gave
let down = false;

// This file is <root>/web/js/api.js: the API is two levels up.
const ROOT = new URL('../../', import.meta.url);

export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

export function apiUrl(path) {
  return new URL(path, ROOT).href;
}

function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorFrom(status, text, retryAfter) {
  let code = 'http_error';
  let message = `the server answered ${status}`;
  try {
    const body = JSON.parse(text);
    code = body.error || code;
    message = body.message || message;
  } catch {
    // Not our JSON (a proxy's page): keep the status line.
  }
  const seconds = Number.parseInt(retryAfter || '', 10);
  return new ApiError(status, code, message, Number.isNaN(seconds) ? null : seconds);
}

export function isUnreachable(error) {
  return error instanceof ApiError && UNREACHABLE.has(error.status);
}

export function serverDown() {
  return down;
}

export function lastAnswerTime() {
  return lastAnswer;
}

function heard(status) {
  if (UNREACHABLE.has(status)) {
    if (!down) {
      down = true;
      document.dispatchEvent(new CustomEvent('server:down'));
    }
    return;
  }
  lastAnswer = new Date();
  if (down) {
    down = false;
    document.dispatchEvent(new CustomEvent('server:up'));
  }
}

async function promptAfter401() {
  const hadToken = Boolean(getToken());
  forgetToken();
  try {
    await askForToken(
      hadToken ? 'The server refused this token. Enter the API token again.'
        : 'This server needs its API token.',
    );
  } catch {
    // Cancelled: say how to give it later where the refused request's error shows.
    throw new ApiError(401, 'no_token', 'No token was entered. To enter it later, use the '
      + '“API token” button at the top of the page.');
  }
}

// fetch() with the token; resolves to the Response when it is ok, throws ApiError else.
// `timeoutMs`: give up on a server that accepted the connection but does not answer.
// `elsewhere`: the answer may come from another host (a presigned result in the object
// store), so no answer is not news about the server, and is said in those words.
export async function request(path, options = {}) {
  const { timeoutMs, elsewhere, ...init } = options;
  for (;;) {
    let response;
    try {
      response = await fetch(apiUrl(path), {
        ...init,
        headers: { ...authHeaders(), ...(init.headers || {}) },
        signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : init.signal,
      });
    } catch {
      if (elsewhere) throw new ApiError(0, 'network', elsewhere);
      heard(0);
      throw new ApiError(0, 'network', NO_ANSWER);
    }
    if (!elsewhere) heard(response.status);
    if (response.status === 401) {
      await promptAfter401();
      continue;
    }
    if (!response.ok) {
      throw await errorFrom(response.status, await response.text(),
        response.headers.get('Retry-After'));
    }
    return response;
  }
}

export async function getJson(path, options = {}) {
  return (await request(path, options)).json();
}

// XMLHttpRequest, not fetch: only it reports upload progress. A picture goes to
// POST picture (part `image`), a video to POST video (part `video`); `fields` (a
// picture's options) go before the file part, where the server reads them.
function sendOnce(file, onProgress, kind, fields) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', apiUrl(kind === 'video' ? 'video' : 'picture'));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', async () => {
      heard(xhr.status);
      if (xhr.status === 202 || xhr.status === 200) resolve(JSON.parse(xhr.responseText));
      else reject(await errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After')));
    });
    xhr.addEventListener('error', () => {
      heard(0);
      reject(new ApiError(0, 'network', 'the upload did not reach the server'));
    });
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append(kind === 'video' ? 'video' : 'image', file, file.name);
    xhr.send(form);
  });
}

export async function uploadFile(file, onProgress, kind = 'picture', fields = {}) {
  for (;;) {
    try {
      return await sendOnce(file, onProgress, kind, fields);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) throw error;
      await promptAfter401();
    }
  }
}

// The anonymized picture as an object URL (fetched with the token; with presigned
// delivery the fetch follows the redirect to the object store). `reload`: the result
// changed (a review correction) while the server lets browsers keep it for an hour, so
// skip the browser's cache.
export async function resultBlobUrl(id, { reload = false } = {}) {
  const response = await request(`picture/${encodeURIComponent(id)}/image`, {
    ...(reload ? { cache: 'reload' } : {}),
    elsewhere: 'the anonymized picture could not be fetched from where the server keeps it',
  });
  return URL.createObjectURL(await response.blob());
}
