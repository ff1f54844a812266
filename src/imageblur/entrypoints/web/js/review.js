// The review screen (GET/PUT picture/{id}/regions with ETag/If-Match, POST
// picture/{id}/approve). It attaches to the result view of a picture in status "review",
// which only a server with IMAGEBLUR_REVIEW=required holds; otherwise it stays out of the way.
// Everything works from the keyboard: regions are checkboxes whose labels say "hidden" or
// "shown", a box is added by its numbers (previewed on the picture) as well as by a drag,
// each change is said in the status line, and approval asks first.
import { ApiError, getJson, request } from './api.js';
import { boxForm, dragBox } from './boxes.js';
import { $, delay, focusQuietly, h, svg } from './dom.js';
import { errorHeadline, isFinal, statusWords } from './messages.js';
import { announce, forget } from './pictures.js';
import {
  addResultExtension, currentRecord, drawRegions, refreshResult, setRegionsSource,
} from './result.js';

const POLL_MS = 1000;
// How long a save waits for its re-render: as long as an upload waits for its first
// result (uploads.js); past it the render is left to finish while the person does else.
const RENDER_LIMIT_MS = 15 * 60 * 1000;
const MIN_BOX_PX = 4;
const MAX_REASON_CHARS = 500; // the server's limit on a reason (422 reason_required without)
// What to tell the reviewer once the view shows a picture's new state (after a save or
// an approval), handed over by picture id.
const notes = new Map();
let active = null; // the Review on screen

addResultExtension(({ record, container, again }) => {
  const note = notes.get(record.id) || '';
  notes.delete(record.id);
  if (record.status === 'review') {
    // The same picture again (saved): the same screen reloads, so focus stays put.
    if (!(again && active?.record.id === record.id)) active = new Review(record, container);
    active.record = record;
    const review = active;
    setRegionsSource(() => review.draw());
    review.load(note);
    return;
  }
  active = null;
  setRegionsSource(null);
  if (!note) return;
  const lost = container.contains(document.activeElement)
    || document.activeElement === document.body;
  const message = h('p', { id: 'review-message', class: 'note', role: 'status', text: note });
  container.replaceChildren(message);
  if (lost) focusQuietly(message); // approved: the screen went, its news takes the focus
});

function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

class Review {
  constructor(record, container) {
    this.record = record;
    this.container = container;
    this.revision = null;
    this.regions = []; // as loaded, with the wanted `hidden` and `reason`
    this.added = []; // new manual boxes {x, y, width, height}
    this.previewing = false;
    this.message = h('p', { id: 'review-message', class: 'note', role: 'status' });
    this.revisionText = h('p', { class: 'meta' });
    this.list = h('ul', { class: 'regions-list', 'aria-label': 'Regions' });
    this.uncertainList = h('ul', { class: 'regions-list', 'aria-label': 'Uncertain candidates' });
    this.addedList = h('ul', { class: 'regions-list', 'aria-label': 'New boxes' });
    this.drawButton = h('button', { type: 'button', id: 'draw-button', class: 'secondary',
      'aria-pressed': 'false', onclick: () => this.toggleDrawing() }, 'Draw a box with the pointer');
    this.saveButton = h('button', { type: 'button', id: 'save-button', onclick: () => this.save() },
      'Save corrections');
    this.approveButton = h('button', { type: 'button', id: 'approve-button',
      onclick: () => this.confirmApproval() }, 'Approve and release');
    this.dialog = this.approvalDialog();
    container.replaceChildren(h('section', { class: 'review', 'aria-labelledby': 'review-title' },
      h('h3', { id: 'review-title', text: 'Review' }), this.revisionText,
      h('p', { class: 'note', text: 'Tick the regions to hide. Uncertain candidates scored '
        + 'below the detection threshold: hide those that are faces. On the picture, hidden '
        + 'regions are hatched with a solid outline, shown ones only outlined.' }),
      this.message,
      h('h4', { text: 'Regions' }), this.list,
      h('h4', { text: 'Uncertain candidates' }), this.uncertainList,
      h('h4', { text: 'New boxes' }), this.addedList,
      this.boxForm(),
      h('div', { class: 'toolbar' }, this.drawButton, this.saveButton, this.approveButton),
      this.dialog));
  }

  async load(note = '') {
    try {
      const response = await request(`picture/${encodeURIComponent(this.record.id)}/regions`);
      const body = await response.json();
      this.revision = response.headers.get('ETag') || `"${body.revision}"`;
      // Showing what the detector hid (not an uncertain candidate) needs a reason.
      this.regions = body.regions.map((region) => ({ ...region, reason: '', saved: region.hidden,
        needsReason: region.hidden && region.source === 'detector' && !region.uncertain }));
      this.revisionText.textContent = `Revision ${body.revision}`;
      this.added = [];
      this.render();
      this.message.textContent = note;
    } catch (error) {
      this.say(error);
    }
  }

  // The lists are rebuilt: a control in them that had focus gets it back (by its id).
  render() {
    const focusedId = [this.list, this.uncertainList, this.addedList]
      .some((list) => list.contains(document.activeElement)) ? document.activeElement.id : null;
    const regular = this.regions.filter((r) => !r.uncertain);
    this.list.replaceChildren(...regular.map((region) => this.regionItem(region)));
    this.uncertainList.replaceChildren(...this.regions.filter((r) => r.uncertain)
      .map((region) => this.regionItem(region)));
    this.addedList.replaceChildren(...this.added.map((box, i) => this.addedItem(box, i)));
    this.draw();
    if (focusedId) $(focusedId)?.focus();
  }

  regionItem(region) {
    const id = `region-${region.id}`;
    const box = h('input', { type: 'checkbox', id, 'data-region': region.id });
    box.checked = region.hidden;
    // A rectangle the upload asked to hide stays hidden: the server refuses to show it.
    box.disabled = region.source === 'request';
    const state = h('span', { class: 'region-state' });
    const reason = this.reasonField(region);
    const showState = () => {
      state.textContent = ` — ${region.hidden ? 'hidden' : 'shown'}`
        + `${region.hidden === region.saved ? '' : ' (not saved yet)'}`;
    };
    showState();
    box.addEventListener('change', () => {
      region.hidden = box.checked;
      reason.hidden = !(region.needsReason && !region.hidden);
      showState();
      this.draw();
      this.message.textContent = `${this.regionName(region)} ${region.hidden
        ? 'hidden: hatched on the picture, blurred in the result'
        : 'shown: outline only, not blurred'}${region.hidden === region.saved ? ', as saved.'
        : '. Not saved yet.'}`;
    });
    return h('li', {}, box, h('label', { for: id, class: 'inline' },
      `Hide ${region.kind} ${region.id} (${this.origin(region)}, ${region.width} × `
      + `${region.height} px)`, state), reason);
  }

  // Where a region comes from, as its label says it.
  origin(region) {
    if (region.source === 'request') return 'asked for by the upload: always hidden';
    const found = region.score === null ? 'manual' : `score ${region.score.toFixed(2)}`;
    return region.ignored ? `${found}, in an area the upload asked to leave` : found;
  }

  regionName(region) {
    return `${region.kind[0].toUpperCase()}${region.kind.slice(1)} ${region.id}`;
  }

  addedItem(box, i) {
    return h('li', {},
      `New box ${i + 1}: ${box.width} × ${box.height} px at (${box.x}, ${box.y}), hidden when saved `,
      h('button', { type: 'button', class: 'secondary', id: `remove-box-${i + 1}`,
        onclick: () => this.removeBox(i) }, `Remove new box ${i + 1}`));
  }

  // Focus goes to the next box's Remove (the one now in its place), else the form.
  removeBox(i) {
    this.added.splice(i, 1);
    this.render();
    this.message.textContent = `New box ${i + 1} removed.`;
    const next = $(`remove-box-${Math.min(i + 1, this.added.length)}`);
    (next || $('add-box-button')).focus();
  }

  // Where a reviewer says why a region the detector hid should be shown; kept in the
  // picture's audit trail. Shown only while such a region is unticked.
  reasonField(region) {
    const id = `reason-${region.id}`;
    const input = h('input', { type: 'text', id, class: 'reason', 'data-reason': region.id,
      maxlength: MAX_REASON_CHARS, autocomplete: 'off' });
    input.value = region.reason;
    input.addEventListener('input', () => {
      region.reason = input.value;
    });
    const field = h('span', { class: 'reason-field' },
      h('label', { for: id, class: 'inline', text: `Why show ${region.kind} ${region.id}? ` }),
      input);
    field.hidden = !(region.needsReason && !region.hidden);
    return field;
  }

  // A box by its numbers (js/boxes.js), drawn as a preview on the picture while the form
  // has focus: the way to add a missed face without a pointer.
  boxForm() {
    this.typed = boxForm({
      noun: 'box',
      size: this.record,
      minPx: MIN_BOX_PX,
      shownOn: 'picture',
      addId: 'add-box-button',
      onAdd: (box) => {
        this.added.push(box);
        this.previewing = false; // drawn as added now; the next edit previews again
        this.render();
        this.message.textContent = `New box ${this.added.length} added: ${box.width} × `
          + `${box.height} px at (${box.x}, ${box.y}), hatched on the picture; it is hidden `
          + 'when you save.';
      },
      say: (text) => {
        this.message.textContent = text;
      },
      onPreview: (on) => {
        this.previewing = on;
        this.draw();
      },
    });
    return this.typed.element;
  }

  draw() {
    const manual = this.added.map((box, i) => ({ ...box, id: `new${i + 1}`, hidden: true,
      uncertain: false }));
    const preview = this.previewing ? this.typed.preview() : null;
    drawRegions(this.record, [...this.regions, ...manual],
      preview ? [svg('rect', { class: 'preview-box', ...preview })] : []);
  }

  // Drawing: js/boxes.js.
  toggleDrawing() {
    const layer = $('regions');
    const on = this.drawButton.getAttribute('aria-pressed') !== 'true';
    this.drawButton.setAttribute('aria-pressed', String(on));
    layer.classList.toggle('drawing', on);
    if (!on) {
      layer.onpointerdown = null;
      return;
    }
    this.draw();
    layer.onpointerdown = (event) => this.startBox(event, layer);
  }

  startBox(event, layer) {
    dragBox(event, layer, this.record, (drawn) => {
      if (drawn.width >= MIN_BOX_PX && drawn.height >= MIN_BOX_PX) this.added.push(drawn);
      this.render();
    });
  }

  async save() {
    if (this.saving) return;
    const unexplained = this.regions.find((r) => r.needsReason && !r.hidden && !r.reason.trim());
    if (unexplained) {
      this.message.textContent = `Say why ${unexplained.kind} ${unexplained.id} should be shown: `
        + 'the detector hid it.';
      $(`reason-${unexplained.id}`)?.focus();
      return;
    }
    const regions = [
      ...this.regions.map(({ id, hidden, reason, needsReason }) => (
        needsReason && !hidden ? { id, hidden, reason: reason.trim() } : { id, hidden })),
      ...this.added.map((box) => ({ ...box, hidden: true })),
    ];
    this.busy(true);
    try {
      await request(`picture/${encodeURIComponent(this.record.id)}/regions`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json', 'If-Match': this.revision },
        body: JSON.stringify({ regions }),
      });
    } catch (error) {
      this.busy(false);
      if (error instanceof ApiError && error.status === 412) {
        await this.load('Someone else changed these regions meanwhile: they have been '
          + 'reloaded. Make your corrections again.');
        return;
      }
      this.say(error);
      return;
    }
    this.message.textContent = 'Saved: the picture is being rendered again…';
    const record = await this.waitForRender();
    this.busy(false);
    // A render that failed leaves the picture in review with its previous result.
    if (record) {
      this.reopen(record, record.error
        ? `The new result could not be made (${record.error}); the previous one is shown. `
          + 'Save again to render your corrections: until then it cannot be approved.'
        : 'The new result is shown.');
    }
  }

  // While a save is sent and rendered, no second save or approval (approval would only
  // answer 409 rendering); the buttons stay focusable, so the keyboard is not lost.
  busy(on) {
    for (const button of [this.saveButton, this.approveButton]) {
      button.setAttribute('aria-disabled', String(on));
    }
    this.saving = on;
  }

  // The picture once its re-render ended (it is back in review, or failed), or null when
  // that did not happen within RENDER_LIMIT_MS or the poll failed (the message says which).
  async waitForRender() {
    const started = Date.now();
    for (;;) {
      if (Date.now() - started > RENDER_LIMIT_MS) {
        this.message.textContent = 'Saved, but the new result is still not rendered after '
          + `${RENDER_LIMIT_MS / 60000} minutes (no worker free?). Open the picture again `
          + 'later: it can be approved once its new result is there.';
        return null;
      }
      await delay(POLL_MS);
      try {
        const record = await getJson(`picture/${encodeURIComponent(this.record.id)}`);
        if (isFinal(record.status)) return record;
        const words = statusWords(record.status);
        if (this.message.textContent !== words) this.message.textContent = words;
      } catch (error) {
        this.say(error);
        return null;
      }
    }
  }

  // Approval releases the result and deletes the original: it cannot be undone, so a
  // dialog says what is released (the file, the regions hidden) and asks first.
  approvalDialog() {
    this.approvalText = h('p', { id: 'approve-text' });
    const cancel = h('button', { type: 'button', id: 'approve-cancel', class: 'secondary',
      onclick: () => dialog.close() }, 'Cancel');
    const confirm = h('button', { type: 'button', id: 'approve-confirm', onclick: () => {
      dialog.close();
      this.approve();
    } }, 'Yes, approve and release');
    const dialog = h('dialog', { id: 'approve-dialog', 'aria-labelledby': 'approve-title',
      'aria-describedby': 'approve-text' },
    h('h2', { id: 'approve-title', text: 'Approve and release?' }), this.approvalText,
    h('div', { class: 'toolbar' }, cancel, confirm));
    dialog.addEventListener('close', () => {
      if (!this.saving) this.approveButton.focus();
    });
    return dialog;
  }

  confirmApproval() {
    if (this.saving) return;
    const hidden = this.regions.filter((r) => r.saved).length;
    const unsaved = this.regions.filter((r) => r.hidden !== r.saved).length + this.added.length;
    this.approvalText.textContent = `Release ${this.record.name} with `
      + `${count(hidden, 'region', 'regions')} hidden, as last saved? Its original is deleted: `
      + 'this cannot be undone.'
      + (unsaved ? ` Your ${count(unsaved, 'unsaved change', 'unsaved changes')} would be lost: `
        + 'cancel and save first to keep them.' : '');
    this.dialog.showModal();
    // The safe choice first: Enter right away does not release anything.
    $('approve-cancel').focus();
  }

  async approve() {
    if (this.saving) return;
    this.busy(true);
    this.message.textContent = `Approving ${this.record.name}…`;
    try {
      const response = await request(`picture/${encodeURIComponent(this.record.id)}/approve`,
        { method: 'POST' });
      const record = await response.json();
      this.busy(false);
      this.reopen(record, `Approved: ${record.name} is released and its original deleted.`);
    } catch (error) {
      this.busy(false);
      this.say(error);
    }
  }

  // The result changed (or was released): drop the old one and show the picture's new
  // state in the same view, unless the person moved on to another picture meanwhile.
  reopen(record, note) {
    forget(record.id, { keepOriginal: true });
    announce('picture:changed', record.id);
    announce('picture:reviewed', record); // its upload card shows the new state
    if (currentRecord()?.id !== record.id) return;
    notes.set(record.id, note);
    refreshResult(record);
  }

  say(error) {
    if (error instanceof ApiError && error.status === 403) {
      this.message.textContent = 'Corrections and approval need the reviewer token: '
        + 'enter it with the "API token" button.';
      return;
    }
    this.message.textContent = error instanceof ApiError
      ? `${errorHeadline(error)} ${error.message}` : String(error.message || error);
  }
}
