// Every call to the API: URLs relative to where the page is served (so it works under
// IMAGEBLUR_ROOT_PATH), the bearer token when there is one, and errors as ApiError
// with the server's own message. A 401 brings the token prompt back, then retries.
import { askForToken, forgetToken, getToken } from './token.js';

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

async function promptAfter401() {
  const hadToken = Boolean(getToken());
  forgetToken();
  await askForToken(
    hadToken ? 'The server refused this token. Enter the API token again.'
      : 'This server needs its API token.',
  );
}

// fetch() with the token; resolves to the Response when it is ok, throws ApiError else.
export async function request(path, options = {}) {
  for (;;) {
    let response;
    try {
      response = await fetch(apiUrl(path), {
        ...options,
        headers: { ...authHeaders(), ...(options.headers || {}) },
      });
    } catch {
      throw new ApiError(0, 'network', 'no answer came back: the network, or a browser policy (CORS), stopped the request');
    }
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

export async function getJson(path) {
  return (await request(path)).json();
}

// XMLHttpRequest, not fetch: only it reports upload progress.
function sendOnce(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', apiUrl('picture'));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', async () => {
      if (xhr.status === 202 || xhr.status === 200) resolve(JSON.parse(xhr.responseText));
      else reject(await errorFrom(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After')));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'the upload did not reach the server')));
    const form = new FormData();
    form.append('image', file, file.name);
    xhr.send(form);
  });
}

export async function uploadPicture(file, onProgress) {
  for (;;) {
    try {
      return await sendOnce(file, onProgress);
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
  const response = await request(`picture/${encodeURIComponent(id)}/image`,
    reload ? { cache: 'reload' } : {});
  return URL.createObjectURL(await response.blob());
}
