// The right-hand panels: queue (pending, running, cancel), history (past runs with their images, reload
// a run's workflow), gallery (every image, full-size view) and the inspector of a node's cached outputs.

import { useEffect, useState } from 'react';
import { api, serverUrl, viewUrl } from '../api/client';
import type { FileRef, NodeOutputs, RunRecord } from '../api/types';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';

export function SidePanel() {
  const panel = useEd((s) => s.panel);
  if (!panel) return null;
  return (
    <aside className="ll-panel" aria-label={panel}>
      <div className="ll-panel-head">
        <b>{panel === 'inspect' ? 'Node outputs' : panel[0].toUpperCase() + panel.slice(1)}</b>
        <button type="button" className="ll-btn ll-icon" aria-label="close panel" onClick={() => editor.store.set({ panel: null })}>×</button>
      </div>
      <div className="ll-panel-body">
        {panel === 'queue' ? <QueuePanel /> : panel === 'history' ? <HistoryPanel /> : panel === 'gallery' ? <GalleryPanel /> : <Inspector />}
      </div>
    </aside>
  );
}

function when(t: number | string | null): string {
  if (t === null || t === undefined) return '';
  const d = typeof t === 'number' ? new Date(t < 1e12 ? t * 1000 : t) : new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleTimeString();
}

function QueuePanel() {
  const q = useEd((s) => s.queue);
  useEffect(() => editor.refreshQueue(), []);
  return (
    <div className="ll-queue">
      <h4>Running</h4>
      {q.running.length ? q.running.map((r) => (
        <div className="ll-qitem running" key={r.run_id}>
          <span>#{r.number}</span> <span className="ll-muted">{r.node_count} nodes</span>
          <button type="button" className="ll-btn ll-btn-small" onClick={() => void api.interrupt(r.run_id).then(() => editor.refreshQueue())}>Stop</button>
        </div>
      )) : <div className="ll-empty">Nothing is running.</div>}
      <h4>Pending {q.pending.length ? <button type="button" className="ll-link" onClick={() => void api.clearQueue().then(() => editor.refreshQueue())}>clear all</button> : null}</h4>
      {q.pending.length ? q.pending.map((r) => (
        <div className="ll-qitem" key={r.run_id}>
          <span>#{r.number}</span> <span className="ll-muted">{r.node_count} nodes · {when(r.created)}</span>
          <button
            type="button"
            className="ll-btn ll-btn-small"
            onClick={() => void api.cancel(r.run_id).then(() => editor.refreshQueue()).catch((e) => editor.toast('error', (e as Error).message))}
          >
            Cancel
          </button>
        </div>
      )) : <div className="ll-empty">The queue is empty.</div>}
    </div>
  );
}

function useHistory(): { items: RunRecord[]; error: string | null; reload: () => void } {
  const version = useEd((s) => s.historyVersion);
  const [items, setItems] = useState<RunRecord[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    api.history(0, 50).then(
      (r) => live && (setItems(r.items ?? []), setError(null)),
      (e) => live && setError((e as Error).message),
    );
    return () => {
      live = false;
    };
  }, [version, tick]);
  return { items, error, reload: () => setTick((t) => t + 1) };
}

function imagesOf(r: RunRecord): FileRef[] {
  return Object.values(r.outputs ?? {}).flatMap((o) => o.images ?? []);
}

function HistoryPanel() {
  const { items, error, reload } = useHistory();
  if (error) return <div className="ll-empty">{error}</div>;
  if (!items.length) return <div className="ll-empty">No runs yet.</div>;
  return (
    <div className="ll-history">
      {items.map((r) => (
        <div className={`ll-hitem st-${r.status}`} key={r.run_id}>
          <div className="ll-hitem-head">
            <b>#{r.number}</b>
            <span className={`ll-chip ll-chip-${r.status === 'success' ? 'executed' : r.status}`}>{r.status}</span>
            <span className="ll-muted">{when(r.finished ?? r.created)}</span>
            <span className="ll-grow" />
            <button type="button" className="ll-btn ll-btn-small" onClick={() => void editor.loadRunWorkflow(r)} title="Open the workflow of this run">Load</button>
            <button type="button" className="ll-btn ll-btn-small" aria-label="delete run" onClick={() => void api.deleteHistory(r.run_id).then(reload)}>×</button>
          </div>
          {r.error ? <div className="ll-errors-inline">{r.error.node_id ? `${r.error.node_id}: ` : ''}{r.error.message}</div> : null}
          <div className="ll-thumbs">
            {imagesOf(r).slice(0, 8).map((f, i) => (
              <img key={i} src={viewUrl(f)} alt={f.filename} onClick={() => editor.openDialog({ kind: 'lightbox', src: viewUrl(f), title: f.filename })} />
            ))}
          </div>
        </div>
      ))}
    </div>
  );
}

function GalleryPanel() {
  const { items, error } = useHistory();
  const images = items.flatMap((r) => imagesOf(r).map((f) => ({ f, r })));
  if (error) return <div className="ll-empty">{error}</div>;
  if (!images.length) return <div className="ll-empty">No images yet: run a workflow with a Save or Preview node.</div>;
  return (
    <div className="ll-gallery" data-testid="gallery">
      {images.map(({ f, r }, i) => (
        <figure key={i} onClick={() => editor.openDialog({ kind: 'lightbox', src: viewUrl(f), title: `${f.filename} · run #${r.number}` })}>
          <img src={viewUrl(f)} alt={f.filename} loading="lazy" />
          <figcaption>{f.filename}</figcaption>
        </figure>
      ))}
    </div>
  );
}

/** Ask the preview route for a useful size (a latent is only 1/8 of the image). */
function sized(u: string, size = 320): string {
  return /[?&]size=/.test(u) ? u : `${u}${u.includes('?') ? '&' : '?'}size=${size}`;
}

function Inspector() {
  const target = useEd((s) => s.inspect);
  // a loop body node ("loop/step") is inspected through its loop node's run
  const run = useEd((s) => (s.inspect ? s.run.nodes[s.inspect] ?? s.run.nodes[s.inspect.split('/')[0]] : undefined));
  const [data, setData] = useState<NodeOutputs | null>(null);
  const [error, setError] = useState<string | null>(null);
  const runId = run?.runId;
  useEffect(() => {
    setData(null);
    setError(null);
    if (!target || !runId) return;
    let live = true;
    api.nodeOutputs(runId, target).then((d) => live && setData(d), (e) => live && setError((e as Error).message));
    return () => {
      live = false;
    };
  }, [target, runId]);
  if (!target) return <div className="ll-empty">Click a node that has run to see its outputs.</div>;
  return (
    <div className="ll-inspector" data-testid="inspector">
      <div className="ll-muted">node <b>{target}</b>{run ? ` · ${run.status}` : ''}</div>
      {error ? <div className="ll-empty">{error}</div> : null}
      {!data && !error ? <div className="ll-empty">Loading…</div> : null}
      {data && !data.available ? <div className="ll-empty">Its outputs are no longer in the cache: run again to see them.</div> : null}
      {data?.available
        ? Object.entries(data.outputs).map(([name, o]) => (
            <section key={name} className="ll-out-card">
              <h5>
                {name} <span className="ll-type-tag" style={{ color: editor.s.catalog.types.color(o.type) }}>{o.type}</span>
                {o.kind !== "image" && o.kind !== "latent" ? <span className="ll-muted"> {o.kind}</span> : null}
              </h5>
              {o.preview_url ? (
                <img
                  src={sized(serverUrl(o.preview_url))}
                  alt={`${name} preview`}
                  className={o.kind === 'latent' ? 'pixelated' : undefined}
                  onClick={() => editor.openDialog({ kind: 'lightbox', src: sized(serverUrl(o.preview_url!), 1024), title: name })}
                />
              ) : null}
              {o.summary ? (
                <table>
                  <tbody>
                    {Object.entries(o.summary).map(([k, v]) => (
                      <tr key={k}>
                        <th>{k}</th>
                        <td>{Array.isArray(v) ? `[${v.join(', ')}]` : typeof v === 'number' ? +v.toPrecision(5) : String(v)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              ) : null}
              {o.value !== null && o.value !== undefined ? <pre>{JSON.stringify(o.value, null, 1)}</pre> : null}
            </section>
          ))
        : null}
    </div>
  );
}
