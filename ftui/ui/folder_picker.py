"""A folder picker that keeps each file's relative path (class subfolders survive the upload).

`gr.File(file_count="directory")` keeps only base names, which loses the class folders. This `gr.HTML`
holds an `<input type="file" webkitdirectory>`; its script packs the files into one zip (entry names are
the webkitRelativePath) and uploads it with Gradio's `upload()` helper, then sets the component's value to
JSON `{"zip": server_path, "count": n}` (or, for folders too big to pack in the browser,
`{"files": [[webkitRelativePath, server_path], ...]}`), which fires the component's `change` event.
Python rebuilds the tree with `ftui.ui.uploads`.
"""

from __future__ import annotations

import gradio as gr

TEMPLATE = """
<div class="ftui-picker">
  <label class="ftui-picker-button">
    <input type="file" webkitdirectory multiple>
    <span class="ftui-picker-icon">&#128193;</span>
    <span>Choose a folder&hellip;</span>
  </label>
  <div class="ftui-picker-status">One subfolder per class (or train/ and val/ folders holding them).</div>
  <div class="ftui-picker-bar"><div class="ftui-picker-fill"></div></div>
</div>
"""

# Small folders travel as ONE store-only zip built in the browser (one request instead of one per file:
# 2,000 small files took ~70 s one by one). The zip writer is hand-written (no CDN here): local headers,
# a central directory, CRC-32, no compression (images are compressed already). Folders over ZIP_LIMIT bytes
# (browser memory) fall back to four uploads in flight at a time, one per file.
SCRIPT = """
const input = element.querySelector('input[type=file]');
const status = element.querySelector('.ftui-picker-status');
const fill = element.querySelector('.ftui-picker-fill');
const ZIP_LIMIT = ZIP_LIMIT_BYTES;
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(bytes) {
  let c = 0xFFFFFFFF;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xFF] ^ (c >>> 8);
  return (c ^ 0xFFFFFFFF) >>> 0;
}
function header(size, fields) {
  const buf = new DataView(new ArrayBuffer(size));
  let at = 0;
  for (const [bytes, value] of fields) {
    if (bytes === 4) buf.setUint32(at, value, true); else buf.setUint16(at, value, true);
    at += bytes;
  }
  return new Uint8Array(buf.buffer);
}
async function buildZip(files, report) {
  const enc = new TextEncoder();
  const parts = [], central = [];
  let offset = 0;
  for (let i = 0; i < files.length; i++) {
    const name = enc.encode(files[i].webkitRelativePath || files[i].name);
    const data = new Uint8Array(await files[i].arrayBuffer());
    const crc = crc32(data);
    // UTF-8 names (flag 0x0800), stored (method 0), DOS date 1980-01-01.
    const common = [[2, 20], [2, 0x0800], [2, 0], [2, 0], [2, 0x21], [4, crc], [4, data.length],
                    [4, data.length], [2, name.length], [2, 0]];
    parts.push(header(30, [[4, 0x04034b50], ...common]), name, data);
    central.push(header(46, [[4, 0x02014b50], [2, 20], ...common, [2, 0], [2, 0], [2, 0], [4, 0],
                             [4, offset]]), name);
    offset += 30 + name.length + data.length;
    if (i % 50 === 0) report(i + 1);
  }
  const size = central.reduce((n, p) => n + p.length, 0);
  const end = header(22, [[4, 0x06054b50], [2, 0], [2, 0], [2, files.length], [2, files.length], [4, size],
                          [4, offset], [2, 0]]);
  return new File([...parts, ...central, end], 'folder.zip', {type: 'application/zip'});
}
async function oneByOne(files, report) {
  const manifest = [], queue = files.slice();
  let done = 0;
  async function worker() {
    while (queue.length) {
      const file = queue.shift();
      const relative = file.webkitRelativePath || file.name;
      try { manifest.push([relative, (await upload(file)).path]); } catch (err) { manifest.push([relative, null]); }
      report(++done);
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
  return {files: manifest};
}
input.addEventListener('change', async () => {
  const files = Array.from(input.files || []);
  if (!files.length) return;
  if (files.length > MAX_FILES) {
    status.textContent = 'That folder has ' + files.length + ' files; at most MAX_FILES can be uploaded.';
    return;
  }
  element.classList.add('busy');
  const t0 = performance.now();
  const total = files.reduce((n, f) => n + f.size, 0);
  const show = (verb) => (done) => {
    fill.style.width = Math.round(100 * done / files.length) + '%';
    status.textContent = verb + ' ' + done + ' / ' + files.length + ' files...';
  };
  let manifest;
  try {
    if (total <= ZIP_LIMIT && files.length > 1) {
      const zip = await buildZip(files, show('Packing'));
      fill.style.width = '100%';
      status.textContent = 'Uploading ' + files.length + ' files in one piece (' + (zip.size / 1048576).toFixed(1) + ' MB)...';
      manifest = {zip: (await upload(zip)).path, count: files.length};
    } else {
      manifest = await oneByOne(files, show('Uploading'));
    }
  } catch (err) {
    element.classList.remove('busy');
    status.textContent = 'The upload failed: ' + err + '. Try again.';
    return;
  }
  element.classList.remove('busy');
  const top = (files[0].webkitRelativePath || '').split('/')[0];
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  status.textContent = 'Uploaded ' + files.length + ' files' + (top ? ' from "' + top + '"' : '') + ' in ' + secs + ' s.';
  input.value = '';
  props.value = JSON.stringify({...manifest, nonce: Date.now()});
});
"""
ZIP_LIMIT_BYTES = 512 * 2**20


def folder_picker(max_files: int, elem_id: str = "ftui-folder-picker") -> gr.HTML:
    """The folder picker component; listen to its `.change` to receive the upload manifest JSON."""
    return gr.HTML(
        value="",
        html_template=TEMPLATE,
        js_on_load=SCRIPT.replace("MAX_FILES", str(int(max_files))).replace("ZIP_LIMIT_BYTES", str(ZIP_LIMIT_BYTES)),
        elem_id=elem_id,
        apply_default_css=False,
    )
