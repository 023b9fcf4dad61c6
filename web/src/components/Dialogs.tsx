// Modal dialogs: the workflow library, save-as, keyboard help, full-size image; and the toasts.

import { useEffect, useRef, useState } from 'react';
import { api } from '../api/client';
import type { LibraryItem } from '../api/types';
import { SHORTCUTS } from '../shortcuts';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';
import { SearchDialog } from './SearchDialog';

export function Dialogs() {
  const d = useEd((s) => s.dialog);
  if (!d) return null;
  if (d.kind === 'search') return <SearchDialog d={d} />;
  const close = () => editor.openDialog(null);
  return (
    <div className="ll-overlay" onMouseDown={close}>
      <div
        className={`ll-dialog ll-dialog-${d.kind}`}
        role="dialog"
        aria-label={d.kind}
        onMouseDown={(e) => e.stopPropagation()}
        onKeyDown={(e) => {
          e.stopPropagation();
          if (e.key === 'Escape') close();
        }}
      >
        {d.kind === 'library' ? <Library /> : d.kind === 'saveAs' ? <SaveAs /> : d.kind === 'help' ? <Help /> : <Lightbox src={d.src} title={d.title} />}
      </div>
    </div>
  );
}

function Library() {
  const [items, setItems] = useState<LibraryItem[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [q, setQ] = useState('');
  const load = () => api.library().then((r) => setItems(r.items ?? []), (e) => setError((e as Error).message));
  useEffect(() => void load(), []);
  const shown = (items ?? []).filter((i) => i.path.toLowerCase().includes(q.toLowerCase()));
  return (
    <>
      <h3>Open a workflow</h3>
      <input autoFocus type="search" placeholder="Filter…" value={q} onChange={(e) => setQ(e.target.value)} aria-label="Filter workflows" />
      {error ? <div className="ll-empty">{error}</div> : null}
      {items === null && !error ? <div className="ll-empty">Loading…</div> : null}
      <ul className="ll-library" data-testid="library">
        {shown.map((i) => (
          <li key={`${i.source}:${i.path}`}>
            <button type="button" className="ll-lib-open" onClick={() => void editor.openFromLibrary(i)} data-path={i.path}>
              <span>{i.path}</span>
              <small className={`ll-src ll-src-${i.source}`}>{i.source === 'builtin' ? 'example' : 'mine'}</small>
            </button>
            {i.source === 'user' ? (
              <button
                type="button"
                className="ll-btn ll-btn-small"
                aria-label={`delete ${i.path}`}
                onClick={() => {
                  if (window.confirm(`Delete ${i.path}?`)) void api.deleteWorkflow(i.path).then(load, (e) => editor.toast('error', (e as Error).message));
                }}
              >
                Delete
              </button>
            ) : null}
          </li>
        ))}
        {items && !shown.length ? <li className="ll-empty">No workflow matches.</li> : null}
      </ul>
      <div className="ll-dialog-actions">
        <button type="button" className="ll-btn" onClick={() => editor.openDialog(null)}>Close</button>
      </div>
    </>
  );
}

function SaveAs() {
  const file = useEd((s) => s.file);
  const [name, setName] = useState(() => (file.path ?? 'my-workflow.json').replace(/\.json$/i, ''));
  const ref = useRef<HTMLInputElement>(null);
  useEffect(() => ref.current?.select(), []);
  const ok = /^[\w][\w .\-/]*$/.test(name.trim()) && !name.includes('..');
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        if (ok) void editor.save(name.trim());
      }}
    >
      <h3>Save workflow as</h3>
      <label className="ll-field">
        <span>Name in your library</span>
        <input ref={ref} autoFocus value={name} onChange={(e) => setName(e.target.value)} aria-label="Workflow name" />
      </label>
      {!ok ? <div className="ll-field-error">Use letters, digits, spaces, dots, dashes; sub-folders with “/”.</div> : null}
      <div className="ll-dialog-actions">
        <button type="button" className="ll-btn" onClick={() => editor.openDialog(null)}>Cancel</button>
        <button type="submit" className="ll-btn ll-primary" disabled={!ok}>Save</button>
      </div>
    </form>
  );
}

function Help() {
  return (
    <>
      <h3>Keyboard and mouse</h3>
      <table className="ll-keys">
        <tbody>
          {SHORTCUTS.map((s) => (
            <tr key={s.keys}>
              <td><kbd>{s.keys}</kbd></td>
              <td>{s.what}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p className="ll-muted">
        Connect an output (right) to an input (left) of a matching type; the socket colours show the types. Widgets have a socket too:
        link one to drive the value from another node. Drop a JSON or PNG file on the canvas to open its workflow.
      </p>
      <div className="ll-dialog-actions">
        <button type="button" className="ll-btn" onClick={() => editor.openDialog(null)}>Close</button>
      </div>
    </>
  );
}

function Lightbox({ src, title }: { src: string; title?: string }) {
  return (
    <figure className="ll-lightbox" onClick={() => editor.openDialog(null)}>
      <img src={src} alt={title ?? 'image'} />
      {title ? <figcaption>{title} · <a href={src} target="_blank" rel="noreferrer" onClick={(e) => e.stopPropagation()}>open</a></figcaption> : null}
    </figure>
  );
}

export function Toasts() {
  const toasts = useEd((s) => s.toasts);
  return (
    <div className="ll-toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className={`ll-toast ll-toast-${t.kind}`} onClick={() => editor.dismissToast(t.id)}>
          {t.text}
        </div>
      ))}
    </div>
  );
}
