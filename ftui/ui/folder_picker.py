"""A folder picker that keeps each file's relative path (class subfolders survive the upload).

`gr.File(file_count="directory")` keeps only base names, which loses the class folders. This `gr.HTML`
holds an `<input type="file" webkitdirectory>`; its script uploads every file with Gradio's `upload()`
helper and then sets the component's value to JSON `{"files": [[webkitRelativePath, server_path], ...]}`,
which fires the component's `change` event. Python rebuilds the tree with `ftui.ui.uploads`.
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

# Several uploads in flight at once: much faster than one by one, without flooding the server.
SCRIPT = """
const input = element.querySelector('input[type=file]');
const status = element.querySelector('.ftui-picker-status');
const fill = element.querySelector('.ftui-picker-fill');
input.addEventListener('change', async () => {
  const files = Array.from(input.files || []);
  if (!files.length) return;
  if (files.length > MAX_FILES) {
    status.textContent = 'That folder has ' + files.length + ' files; at most MAX_FILES can be uploaded.';
    return;
  }
  const manifest = [];
  const queue = files.slice();
  let done = 0;
  element.classList.add('busy');
  async function worker() {
    while (queue.length) {
      const file = queue.shift();
      const relative = file.webkitRelativePath || file.name;
      try {
        const result = await upload(file);
        manifest.push([relative, result.path]);
      } catch (err) {
        manifest.push([relative, null]);
      }
      done += 1;
      fill.style.width = Math.round(100 * done / files.length) + '%';
      status.textContent = 'Uploading ' + done + ' / ' + files.length + ' files...';
    }
  }
  await Promise.all([worker(), worker(), worker(), worker()]);
  element.classList.remove('busy');
  const top = (files[0].webkitRelativePath || '').split('/')[0];
  status.textContent = 'Uploaded ' + files.length + ' files' + (top ? ' from "' + top + '"' : '') + '.';
  input.value = '';
  props.value = JSON.stringify({files: manifest, nonce: Date.now()});
});
"""


def folder_picker(max_files: int, elem_id: str = "ftui-folder-picker") -> gr.HTML:
    """The folder picker component; listen to its `.change` to receive the upload manifest JSON."""
    return gr.HTML(
        value="",
        html_template=TEMPLATE,
        js_on_load=SCRIPT.replace("MAX_FILES", str(int(max_files))),
        elem_id=elem_id,
        apply_default_css=False,
    )
