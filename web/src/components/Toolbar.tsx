// The top bar: workflow name and file actions, run / interrupt, undo / redo, panels, help.

import { useRef } from 'react';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';

export function Toolbar() {
  const file = useEd((s) => s.file);
  const dirty = useEd((s) => s.dirty);
  const canUndo = useEd((s) => s.canUndo);
  const canRedo = useEd((s) => s.canRedo);
  const phase = useEd((s) => s.run.phase);
  const queue = useEd((s) => s.queue);
  const panel = useEd((s) => s.panel);
  const upload = useRef<HTMLInputElement>(null);
  const name = file.path ?? 'Untitled';
  const busy = queue.running.length + queue.pending.length;
  return (
    <header className="ll-toolbar">
      <div className="ll-brand" title="Latent Loom">
        <span className="ll-logo">◈</span> Latent Loom
      </div>
      <div className="ll-file">
        <span className="ll-file-name" data-testid="file-name" title={file.source ? `${file.source} workflow` : 'not saved in the library'}>
          {name}
          {dirty ? <span className="ll-dirty" title="unsaved changes">●</span> : null}
        </span>
        <button type="button" className="ll-btn" onClick={() => editor.newWorkflow()} title="New empty workflow">New</button>
        <button type="button" className="ll-btn" onClick={() => editor.openDialog({ kind: 'library' })} title="Open from the library (Ctrl+O)">Open</button>
        <button type="button" className="ll-btn" onClick={() => void editor.save()} title="Save to the library (Ctrl+S)">Save</button>
        <button type="button" className="ll-btn" onClick={() => editor.openDialog({ kind: 'saveAs' })} title="Save under a new name (Ctrl+Shift+S)">Save as</button>
        <span className="ll-sep" />
        <button type="button" className="ll-btn" onClick={() => editor.download()} title="Download the workflow as JSON">Download</button>
        <button type="button" className="ll-btn" onClick={() => upload.current?.click()} title="Open a JSON or PNG file (ours or ComfyUI's)">Import…</button>
        <input
          ref={upload}
          type="file"
          accept=".json,application/json,image/png"
          hidden
          data-testid="import-file"
          onChange={(e) => {
            const f = e.target.files?.[0];
            if (f) void editor.openFile(f);
            e.target.value = '';
          }}
        />
      </div>
      <div className="ll-actions">
        <button type="button" className="ll-btn ll-icon" disabled={!canUndo} onClick={() => editor.doUndo()} title="Undo (Ctrl+Z)" aria-label="Undo">↶</button>
        <button type="button" className="ll-btn ll-icon" disabled={!canRedo} onClick={() => editor.doRedo()} title="Redo (Ctrl+Shift+Z)" aria-label="Redo">↷</button>
        <span className="ll-sep" />
        <RunPhase />
        <button type="button" className="ll-btn ll-run" data-testid="run" onClick={() => void editor.run()} title="Run the workflow (Ctrl+Enter)">
          ▶ Run{busy ? <span className="ll-badge">{busy}</span> : null}
        </button>
        <button type="button" className="ll-btn" disabled={phase !== 'running'} onClick={() => void editor.interrupt()} title="Stop the running workflow">■ Stop</button>
        <span className="ll-sep" />
        {(['queue', 'history', 'gallery'] as const).map((p) => (
          <button key={p} type="button" className={'ll-btn ll-tab' + (panel === p ? ' active' : '')} onClick={() => editor.togglePanel(p)} data-testid={`panel-${p}`}>
            {p[0].toUpperCase() + p.slice(1)}
          </button>
        ))}
        <button type="button" className="ll-btn ll-icon" onClick={() => editor.openDialog({ kind: 'help' })} title="Keyboard shortcuts (?)" aria-label="Help">?</button>
      </div>
    </header>
  );
}

export function Breadcrumb() {
  const path = useEd((s) => s.path);
  const root = useEd((s) => s.doc.root);
  if (!path.length) return null;
  const names: string[] = [];
  let g = root;
  for (const id of path) {
    const n = g.nodes[id];
    names.push(n?.title ?? `${id} (${n?.type ?? '?'})`);
    if (!n?.body) break;
    g = n.body;
  }
  return (
    <nav className="ll-breadcrumb" aria-label="Sub-graph path">
      <button type="button" onClick={() => editor.leaveBody(0)}>Workflow</button>
      {names.map((n, i) => (
        <span key={i}>
          <span className="ll-crumb-sep">›</span>
          {i === names.length - 1 ? <b>{n} · loop body</b> : <button type="button" onClick={() => editor.leaveBody(i + 1)}>{n}</button>}
        </span>
      ))}
      <button type="button" className="ll-btn ll-btn-small" onClick={() => editor.leaveBody()} title="Back to the enclosing graph (Esc)">⏎ Return</button>
    </nav>
  );
}

export function RunPhase() {
  const run = useEd((s) => s.run);
  const text = run.phase === 'running' ? 'Running…' : run.phase === 'queued' ? 'Queued' : run.phase === 'success' ? `Done${run.seconds !== null ? ` in ${run.seconds.toFixed(2)} s` : ''}` : run.phase === 'error' ? 'Failed' : run.phase === 'interrupted' ? 'Stopped' : '';
  return (
    <span className={`ll-runline ph-${run.phase}`} data-testid="run-phase" data-phase={run.phase}>
      {text}
    </span>
  );
}

export function RunStatus() {
  const run = useEd((s) => s.run);
  const validation = useEd((s) => s.validation);
  const conn = useEd((s) => s.conn);
  const retry = useEd((s) => s.connRetryMs);
  const general = [...validation, ...run.errors].filter((e) => !e.node_id);
  return (
    <>
      {conn === 'closed' ? (
        <div className="ll-banner" role="alert" data-testid="conn-banner">
          Lost the connection to the server — reconnecting{retry ? ` in ${Math.ceil(retry / 1000)} s` : ''}… Your work is kept in this browser.
          <button type="button" className="ll-btn ll-btn-small" onClick={() => editor.reconnect()}>Reconnect now</button>
        </div>
      ) : null}
      {general.length ? (
        <div className="ll-banner ll-banner-error" role="alert" data-testid="workflow-errors">
          {general.map((e, i) => <div key={i}>{e.message}</div>)}
        </div>
      ) : null}
    </>
  );
}
