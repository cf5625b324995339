// medmtl's page: upload scans, show the lesion, the class and why. Plain JavaScript, nothing
// loaded from elsewhere. The mask is the 8-bit probability map the API returns, thresholded
// here with the API's rule (value >= floor(t * 255 + 0.5)) and post-processed as the model
// was trained to be, so moving the slider never runs the network again.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { results: [], queue: [], busy: false, card: null, token: "" };

function level(t) {
  return Math.floor(t * 255 + 0.5);
}

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = { detail: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

// -- post-processing, as medmtl.models.postprocess.PostProcess does it ------------------------
function keepComponents(mask, w, h, largest, minArea) {
  const labels = new Int32Array(w * h);
  const sizes = [0];
  const stack = [];
  for (let start = 0; start < w * h; start++) {
    if (!mask[start] || labels[start]) continue;
    const id = sizes.length;
    let size = 0;
    labels[start] = id;
    stack.push(start);
    while (stack.length) {
      const p = stack.pop();
      size++;
      const x = p % w, y = (p - x) / w;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {  // 8-connectivity: corners touch
          const nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          const q = ny * w + nx;
          if (mask[q] && !labels[q]) {
            labels[q] = id;
            stack.push(q);
          }
        }
      }
    }
    sizes.push(size);
  }
  if (sizes.length === 1) return mask;
  const keep = sizes.map((s, i) => i > 0 && s >= Math.max(minArea, 1));
  if (largest) {
    let best = 1;
    for (let i = 2; i < sizes.length; i++) if (sizes[i] > sizes[best]) best = i;
    keep.fill(false);
    keep[best] = true;
  }
  const out = new Uint8Array(w * h);
  for (let p = 0; p < w * h; p++) out[p] = labels[p] && keep[labels[p]] ? 1 : 0;
  return out;
}

function fillHoles(mask, w, h) {
  // background reachable from the border (4-connectivity) stays background; the rest is a hole
  const outside = new Uint8Array(w * h);
  const stack = [];
  const seed = (p) => {
    if (!mask[p] && !outside[p]) {
      outside[p] = 1;
      stack.push(p);
    }
  };
  for (let x = 0; x < w; x++) {
    seed(x);
    seed((h - 1) * w + x);
  }
  for (let y = 0; y < h; y++) {
    seed(y * w);
    seed(y * w + w - 1);
  }
  while (stack.length) {
    const p = stack.pop();
    const x = p % w, y = (p - x) / w;
    if (x > 0) seed(p - 1);
    if (x < w - 1) seed(p + 1);
    if (y > 0) seed(p - w);
    if (y < h - 1) seed(p + w);
  }
  const out = new Uint8Array(w * h);
  for (let p = 0; p < w * h; p++) out[p] = mask[p] || !outside[p] ? 1 : 0;
  return out;
}

function lesionMask(result, t) {
  const { prob, w, h } = result;
  let mask = new Uint8Array(w * h);
  const lv = level(t);
  let any = false;
  for (let p = 0; p < w * h; p++) {
    mask[p] = prob[p] >= lv ? 1 : 0;
    any = any || mask[p] === 1;
  }
  const pp = result.data.postprocess || {};
  if (!any) return mask;
  if (pp.largest_component || pp.min_area > 0) {
    mask = keepComponents(mask, w, h, pp.largest_component, pp.min_area || 0);
  }
  if (pp.fill_holes) mask = fillHoles(mask, w, h);
  return mask;
}

// -- drawing ------------------------------------------------------------------------------------
function pixels(dataUrl) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.width;
      c.height = img.height;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      resolve(ctx.getImageData(0, 0, img.width, img.height));
    };
    img.onerror = () => reject(new Error("the server sent an image the browser cannot show"));
    img.src = dataUrl;
  });
}

// the grey image with the mask's fill and contour; returns the mask's area in pixels
function paintOverlay(ctx, grey, mask, w, h) {
  const out = ctx.createImageData(w, h);
  let area = 0;
  for (let p = 0; p < w * h; p++) {
    const v = grey[p];
    let r = v, g = v, b = v;
    if (mask[p]) {
      area++;
      const x = p % w, y = (p - x) / w;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !mask[p - 1] || !mask[p + 1] || !mask[p - w] || !mask[p + w];
      if (edge) {
        r = 255; g = 230; b = 0;  // contour
      } else {
        r = 0.65 * v + 0.35 * 255; g = 0.65 * v + 0.35 * 60; b = 0.65 * v + 0.35 * 60;  // fill
      }
    }
    out.data[4 * p] = r;
    out.data[4 * p + 1] = g;
    out.data[4 * p + 2] = b;
    out.data[4 * p + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  return area;
}

function draw(result) {
  const t = Number($("threshold").value);
  const { w, h, grey, el } = result;
  const canvas = el.querySelector("canvas.overlay");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  // a mask being corrected is the clinician's: the threshold no longer changes it
  const mask = result.edit || (result.prob ? lesionMask(result, t) : new Uint8Array(w * h));
  const area = paintOverlay(ctx, grey, mask, w, h);
  result.area = area;
  result.threshold = t;
  const spacing = result.data.pixel_spacing_mm;
  result.areaMm = spacing ? area * spacing[0] * spacing[1] : null;
  el.dataset.area = String(area);
  el.querySelector(".area-px").textContent = String(area);
  el.querySelector(".area-mm").textContent =
    result.areaMm === null ? " (no pixel spacing in this file)" : `, ${result.areaMm.toFixed(2)} mm²`;
  // the mask as it is shown, as a PNG to download
  const link = el.querySelector(".mask-download");
  link.href = maskCanvas(mask, w, h).toDataURL("image/png");
  link.download = `${result.name.replace(/\.[^.]+$/, "")}_mask.png`;
}

// a mask as a black and white canvas (255: lesion), for a PNG
function maskCanvas(mask, w, h) {
  const m = document.createElement("canvas");
  m.width = w;
  m.height = h;
  const mctx = m.getContext("2d");
  const md = mctx.createImageData(w, h);
  for (let p = 0; p < w * h; p++) {
    const v = mask[p] ? 255 : 0;
    md.data[4 * p] = v; md.data[4 * p + 1] = v; md.data[4 * p + 2] = v; md.data[4 * p + 3] = 255;
  }
  mctx.putImageData(md, 0, 0);
  return m;
}

// -- correcting a result (medmtl-serve site_dir=): draw and erase the lesion, set the class,
// save the case to the site's folder on the server --------------------------------------------
function paintAt(result, x, y) {
  const { w, h, edit } = result;
  const r = Number(result.el.querySelector(".brush").value) / 2;
  const value = result.tool === "erase" ? 0 : 1;
  for (let yy = Math.max(0, Math.floor(y - r)); yy <= Math.min(h - 1, Math.ceil(y + r)); yy++) {
    for (let xx = Math.max(0, Math.floor(x - r)); xx <= Math.min(w - 1, Math.ceil(x + r)); xx++) {
      if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) edit[yy * result.w + xx] = value;
    }
  }
}

function strokeTo(result, e) {
  const canvas = result.el.querySelector("canvas.overlay");
  const rect = canvas.getBoundingClientRect();
  const x = ((e.clientX - rect.left) * result.w) / rect.width;
  const y = ((e.clientY - rect.top) * result.h) / rect.height;
  const last = result.last || { x, y };
  const steps = Math.max(1, Math.ceil(Math.hypot(x - last.x, y - last.y)));
  for (let k = 1; k <= steps; k++) {
    paintAt(result, last.x + ((x - last.x) * k) / steps, last.y + ((y - last.y) * k) / steps);
  }
  result.last = { x, y };
  draw(result);
}

function setTool(result, tool) {
  result.tool = tool;
  for (const b of result.el.querySelectorAll(".tool")) {
    b.setAttribute("aria-pressed", b.dataset.tool === tool ? "true" : "false");
  }
}

function startCorrecting(result) {
  const t = Number($("threshold").value);
  result.edit = Uint8Array.from(result.prob ? lesionMask(result, t) : new Uint8Array(result.w * result.h));
  const select = result.el.querySelector(".correct-class");
  select.replaceChildren(...result.data.classes.map((c) => new Option(c, c)));
  select.value = result.data.predicted_class || result.data.classes[0];
  setTool(result, "draw");
  result.el.querySelector(".correct-tools").hidden = false;
  result.el.querySelector(".correct-start").hidden = true;
  result.el.dataset.correcting = "true";
  draw(result);
}

function stopCorrecting(result) {
  result.edit = null;
  result.el.querySelector(".correct-tools").hidden = true;
  result.el.querySelector(".correct-start").hidden = false;
  result.el.dataset.correcting = "false";
  draw(result);
}

async function saveCase(result) {
  const status = result.el.querySelector(".correct-status");
  const blob = await new Promise((resolve) => maskCanvas(result.edit, result.w, result.h).toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("file", result.file, result.file.name);
  form.append("mask", blob, "mask.png");
  form.append("label", result.el.querySelector(".correct-class").value);
  status.textContent = "Saving…";
  try {
    const saved = await api("/api/cases", { method: "POST", body: form });
    result.el.dataset.savedCase = saved.case;
    status.textContent = `Saved as case ${saved.case} (${saved.label})` +
      (saved.replaced ? ", replacing its earlier correction." : ".") +
      (saved.seg_error ? ` No DICOM SEG: ${saved.seg_error}` : "");
    await showSiteCases();
  } catch (err) {
    status.textContent = `Not saved: ${err.message}`;
  }
}

function wireCorrecting(result) {
  const el = result.el;
  el.querySelector(".correct").hidden = !(state.card && state.card.site_cases && result.prob);
  el.querySelector(".correct-start").addEventListener("click", () => startCorrecting(result));
  el.querySelector(".correct-cancel").addEventListener("click", () => stopCorrecting(result));
  for (const b of el.querySelectorAll(".tool")) {
    b.addEventListener("click", () => setTool(result, b.dataset.tool));
  }
  el.querySelector(".clear-mask").addEventListener("click", () => {
    result.edit.fill(0);
    draw(result);
  });
  el.querySelector(".correct-save").addEventListener("click", () => saveCase(result));
  const canvas = el.querySelector("canvas.overlay");
  canvas.addEventListener("pointerdown", (e) => {
    if (!result.edit) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    result.last = null;
    strokeTo(result, e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (result.edit && result.last && e.buttons) strokeTo(result, e);
  });
  const end = () => { result.last = null; };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
}

// the site's saved cases: list, review, delete (GET/DELETE /api/cases)
async function showSiteCases() {
  if (!(state.card && state.card.site_cases)) return;
  const body = $("site-table").querySelector("tbody");
  try {
    const data = await api("/api/cases");
    body.replaceChildren(...data.cases.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.case = c.case;
      tr.dataset.label = c.label;
      for (const text of [c.case, c.file, c.label, String(c.lesion_px), c.seg ? "yes" : "–", c.saved]) {
        cell(tr, text);
      }
      const td = document.createElement("td");
      const review = document.createElement("button");
      review.type = "button";
      review.className = "review";
      review.textContent = "Review";
      review.addEventListener("click", () => reviewCase(c));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "delete";
      remove.textContent = "Delete";
      remove.addEventListener("click", async () => {
        if (remove.dataset.armed !== "true") {  // a second click deletes: no slip of the mouse
          remove.dataset.armed = "true";
          remove.textContent = "Delete its files?";
          return;
        }
        try {
          await api(`/api/cases/${c.case}`, { method: "DELETE" });
          $("site-status").textContent = `Deleted case ${c.case}.`;
          $("site-review").hidden = true;
        } catch (err) {
          $("site-status").textContent = `Not deleted: ${err.message}`;
        }
        await showSiteCases();
      });
      td.append(review, remove);
      tr.appendChild(td);
      return tr;
    }));
    $("site-table").hidden = data.cases.length === 0;
    $("site-count").textContent = `${data.cases.length} case(s) saved on the server.`;
  } catch (err) {
    $("site-status").textContent = `The saved cases could not be read: ${err.message}`;
  }
}

async function reviewCase(c) {
  try {
    const data = await api(`/api/cases/${c.case}`);
    const img = await pixels(data.image_png);
    const mk = await pixels(data.mask_png);
    const { width: w, height: h } = img;
    const grey = new Uint8Array(w * h);
    const mask = new Uint8Array(w * h);
    for (let p = 0; p < w * h; p++) {
      grey[p] = img.data[4 * p];
      mask[p] = mk.data[4 * p] > 0 ? 1 : 0;
    }
    const canvas = $("site-review").querySelector("canvas");
    canvas.width = w;
    canvas.height = h;
    const area = paintOverlay(canvas.getContext("2d"), grey, mask, w, h);
    $("site-review").dataset.case = c.case;
    $("site-review").dataset.area = String(area);
    $("site-review").querySelector("figcaption").textContent =
      `case ${c.case} (${data.file}): ${data.label}, ${area} lesion pixels`;
    $("site-review").hidden = false;
  } catch (err) {
    $("site-status").textContent = `The case could not be shown: ${err.message}`;
  }
}

function showBars(result) {
  const bars = result.el.querySelector(".bars");
  bars.textContent = "";
  const probs = result.data.probabilities || {};
  for (const name of result.data.classes) {
    if (!(name in probs)) continue;
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.class = name;
    row.dataset.probability = String(probs[name]);
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill" + (name === result.data.predicted_class ? " top" : "");
    fill.style.width = `${(100 * probs[name]).toFixed(1)}%`;
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = `${(100 * probs[name]).toFixed(1)} %`;
    row.append(label, track, value);
    bars.appendChild(row);
  }
}

// -- the work ---------------------------------------------------------------------------------
function addResult(file) {
  const el = $("result-template").content.firstElementChild.cloneNode(true);
  el.querySelector(".file").textContent = file.name;
  el.dataset.file = file.name;
  $("results").appendChild(el);
  const result = { file, name: file.name, el, data: null };
  state.results.push(result);
  return result;
}

async function predict(result, gradcam) {
  const form = new FormData();
  form.append("file", result.file, result.file.name);
  form.append("threshold", $("threshold").value);
  form.append("gradcam", gradcam ? "true" : "false");
  return api("/api/predict", { method: "POST", body: form });
}

async function run(result) {
  result.el.dataset.state = "running";
  try {
    const gradcam = $("gradcam").checked && state.card && state.card.gradcam;
    const data = await predict(result, gradcam);
    result.data = data;
    const img = await pixels(data.image_png);
    result.w = img.width;
    result.h = img.height;
    result.grey = new Uint8Array(img.width * img.height);
    for (let p = 0; p < result.grey.length; p++) result.grey[p] = img.data[4 * p];
    if (data.probability_png) {
      const pr = await pixels(data.probability_png);
      result.prob = new Uint8Array(pr.width * pr.height);
      for (let p = 0; p < result.prob.length; p++) result.prob[p] = pr.data[4 * p];
    }
    result.el.querySelector(".predicted-class").textContent = data.predicted_class || "(no classification head)";
    result.el.dataset.class = data.predicted_class || "";
    showBars(result);
    showUncertainty(result);
    if (data.gradcam_png) showCam(result, data.gradcam_png);
    draw(result);
    wireCorrecting(result);
    result.el.dataset.state = "done";
  } catch (err) {
    result.error = err.message;
    const p = result.el.querySelector(".error");
    p.textContent = err.message;
    p.hidden = false;
    result.el.dataset.state = "error";
  }
}

// in words a clinician reads at a glance (docs/inference.md): how sure, what it could be,
// whether the scan is like the training data, and whether to refer
function showUncertainty(result) {
  const d = result.data;
  const el = result.el;
  el.querySelector(".warning.unlike").hidden = !d.unlike_training;
  el.dataset.unlike = d.unlike_training ? "true" : "false";
  el.dataset.refer = d.refer ? "true" : "false";
  const sets = d.answer_set;
  const row = el.querySelector(".answer-set-row");
  if (Array.isArray(sets) && state.card && state.card.conformal && state.card.conformal.fitted) {
    row.hidden = false;
    el.querySelector(".answer-set").textContent = sets.length ? sets.join(" or ") : "none of the classes";
    const cover = Math.round(100 * (1 - state.card.conformal.alpha));
    el.querySelector(".answer-set-note").textContent =
      `(holds the true class for about ${cover} % of scans like the training data)`;
  }
  const words = [];
  if (typeof d.entropy === "number") {
    words.push(d.entropy < 0.2 ? "a confident answer" : d.entropy < 0.5 ? "a fairly uncertain answer" : "close to a coin toss");
  }
  if (typeof d.class_disagreement === "number" && d.class_disagreement >= 0.05) {
    words.push("the models disagree on the class");
  }
  if (typeof d.mask_agreement === "number" && d.mask_agreement < 0.8) {
    words.push(`the outlines agree only ${Math.round(100 * d.mask_agreement)} %`);
  }
  el.querySelector(".uncertainty").textContent = words.length ? `Certainty: ${words.join("; ")}.` : "";
  // the server's reasons (medmtl.metrics.refer_reasons): answer set, unlike scan, outlines
  const why = Array.isArray(d.refer_reasons) ? d.refer_reasons : [];
  el.querySelector(".warning.refer").hidden = !d.refer;
  el.querySelector(".refer-why").textContent = why.length ? `${why.join("; ")}. A human should read this scan.` : "A human should read this scan.";
  if (d.variance_png) {
    const fig = el.querySelector("figure.variance");
    fig.querySelector("img").src = d.variance_png;
    fig.hidden = false;
  }
}

function showCam(result, url) {
  result.cam = url;
  const fig = result.el.querySelector("figure.cam");
  fig.querySelector("img").src = url;
  fig.hidden = !$("gradcam").checked;
}

async function pump() {
  if (state.busy) return;
  state.busy = true;
  const total = () => state.results.length;
  $("progress-row").hidden = false;
  while (state.queue.length) {
    const result = state.queue.shift();
    const done = total() - state.queue.length - 1;
    $("progress").max = total();
    $("progress").value = done;
    $("progress-text").textContent = `Predicting ${done + 1} of ${total()}: ${result.name}`;
    await run(result);
  }
  $("progress").value = total();
  $("progress-text").textContent = `${total()} image(s) done`;
  await showShift();
  await showLabelOrder();
  $("csv").disabled = !state.results.some((r) => r.data);
  state.busy = false;
}

// do the recent uploads, together, look like the training data? (GET /api/shift)
async function showShift(options = {}) {
  try {
    const report = await api("/api/shift", options);
    const el = $("shift");
    el.hidden = !report.fitted;
    $("shift-text").textContent = report.text;
    const shifted = Boolean(report.result && report.result.shifted);
    el.dataset.shifted = shifted ? "true" : "false";
    $("shift-advice").hidden = !shifted;
  } catch (err) {
    $("shift-text").textContent = `The shift test could not be read: ${err.message}`;
  }
}

// the recent uploads in the order in which to label them (GET /api/label_order)
async function showLabelOrder() {
  const list = $("label-order-list");
  try {
    const report = await api("/api/label_order");
    list.replaceChildren(
      ...report.order.map((item) => {
        const li = document.createElement("li");
        li.dataset.file = item.file;
        const copy = item.near_copy_of ? `, a near copy of ${item.near_copy_of}` : "";
        const said = item.predicted_class ? `called ${item.predicted_class}, ` : "";
        li.textContent =
          `${item.file} (${said}doubt ${Number(item.informativeness).toFixed(2)}${copy})`;
        return li;
      }),
    );
    $("label-order").hidden = report.images < 2;
  } catch {
    list.replaceChildren();
    $("label-order").hidden = true;
  }
}

function addFiles(files) {
  for (const file of files) state.queue.push(addResult(file));
  pump();
}

function csv() {
  const classes = state.card ? state.card.classes : [];
  const head = ["file", "predicted_class", ...classes.map((c) => `prob_${c}`), "entropy",
    "answer_set", "unlike_score", "unlike_training", "refer", "threshold",
    "lesion_area_px", "lesion_area_mm2", "error"];
  const quote = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const rows = [head.join(",")];
  for (const r of state.results) {
    const d = r.data || {};
    const probs = d.probabilities || {};
    const sets = Array.isArray(d.answer_set) ? d.answer_set.join("|") : "";
    const flag = (v) => (v === undefined ? "" : v ? 1 : 0);
    rows.push([r.name, d.predicted_class, ...classes.map((c) => probs[c]), d.entropy, sets,
      d.unlike_score, flag(d.unlike_training), flag(d.refer), r.threshold,
      r.data ? r.area : "", r.areaMm === null || r.areaMm === undefined ? "" : r.areaMm.toFixed(3),
      r.error || ""].map(quote).join(","));
  }
  const blob = new Blob([rows.join("\n") + "\n"], { type: "text/csv" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "medmtl_results.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

async function loadCard() {
  try {
    const card = await api("/api/model");
    state.card = card;
    const test = card.test_metrics || {};
    const shown = Object.entries(test).map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", ");
    $("card").textContent =
      `Model ${card.model} (${card.backend}; ${card.classes.join(" / ")}; ${card.input_size} px input)` +
      (card.trained_on ? `, trained on ${card.trained_on}` : "") +
      (shown ? `; test: ${shown}` : "; no test metrics recorded") +
      (card.calibration && card.calibration.temperature && card.calibration.temperature !== 1
        ? `; calibrated (temperature ${Number(card.calibration.temperature).toFixed(2)})` : "") +
      (card.unlike && card.unlike.fitted ? "; warns on scans unlike its training data" : "; cannot tell scans unlike its training data");
    $("archive").hidden = !card.archive;
    $("site").hidden = !card.site_cases;
    $("gradcam").disabled = !card.gradcam;
    $("gradcam-label").title = card.gradcam ? "" : "Grad-CAM needs a checkpoint (PyTorch backend)";
  } catch (err) {
    $("card").textContent = `The model card could not be read: ${err.message}`;
  }
}

// -- a study of the server's image archive (medmtl-serve archive=...) -------------------------
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

async function predictStudy() {
  const uid = $("study-uid").value.trim();
  const status = $("study-status");
  const body = $("study-table").querySelector("tbody");
  body.replaceChildren();
  $("study-notes").replaceChildren();
  $("study-table").hidden = true;
  if (!/^[0-9][0-9.]*$/.test(uid)) {
    status.textContent = "A Study Instance UID is digits and dots, e.g. 1.2.840.113619.2.1.";
    return;
  }
  const form = new FormData();
  form.append("study_uid", uid);
  form.append("push", $("push").checked ? "true" : "false");
  form.append("threshold", $("threshold").value);
  status.textContent = "Retrieving and predicting the study…";
  $("study-go").disabled = true;
  try {
    const data = await api("/api/study", { method: "POST", body: form });
    for (const image of data.images) {
      const tr = document.createElement("tr");
      const p = image.probabilities[image.predicted_class];
      cell(tr, image.instance);
      cell(tr, image.predicted_class || "–");
      cell(tr, p === undefined ? "–" : Number(p).toFixed(2));
      cell(tr, image.lesion_area_mm2 !== null ? `${Number(image.lesion_area_mm2).toFixed(1)} mm²`
        : `${image.lesion_area_px} px`);
      cell(tr, image.seg_sop_instance_uid || "–");
      body.appendChild(tr);
    }
    $("study-table").hidden = data.images.length === 0;
    for (const item of [...data.skipped.map((s) => `skipped ${s.instance}: ${s.reason}`),
                        ...data.failed.map((f) => `not predicted ${f.instance}: ${f.reason}`),
                        ...data.images.filter((i) => i.seg_error)
                          .map((i) => `no SEG for ${i.instance}: ${i.seg_error}`)]) {
      const li = document.createElement("li");
      li.textContent = item;
      $("study-notes").appendChild(li);
    }
    status.textContent = `${data.images.length} image(s) predicted` +
      (data.pushed ? `; ${data.stored.length} result(s) stored in the archive.` : "; nothing stored.");
  } catch (err) {
    status.textContent = err.message;
  } finally {
    $("study-go").disabled = false;
  }
}

async function init() {
  const health = await api("/api/health");
  if (health.auth) {
    $("token-row").hidden = false;
    $("token").addEventListener("change", () => {
      state.token = $("token").value;
      loadCard();
    });
  }
  await loadCard();
  $("files").addEventListener("change", (e) => {
    addFiles(e.target.files);
    e.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(e.dataTransfer.files);
  });
  $("threshold").addEventListener("input", () => {
    $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
    for (const r of state.results) if (r.data) draw(r);
  });
  $("gradcam").addEventListener("change", async () => {
    for (const r of state.results) {
      if (!r.data) continue;
      if ($("gradcam").checked && !r.cam) {
        try {
          const data = await predict(r, true);
          showCam(r, data.gradcam_png);
        } catch (err) {
          r.el.querySelector(".error").textContent = err.message;
          r.el.querySelector(".error").hidden = false;
        }
      }
      r.el.querySelector("figure.cam").hidden = !$("gradcam").checked;
    }
  });
  $("csv").addEventListener("click", csv);
  $("shift-reset").addEventListener("click", async () => {
    await showShift({ method: "DELETE" });
    await showLabelOrder();
  });
  await showShift();
  await showLabelOrder();
  $("study-go").addEventListener("click", predictStudy);
  await showSiteCases();
  document.body.dataset.ready = "true";
}

init().catch((err) => {
  $("card").textContent = `The server could not be reached: ${err.message}`;
});
