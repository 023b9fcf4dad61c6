// The node palette: every node of the catalog, grouped by category, searchable by name, category
// and socket type (`in:IMAGE`, `out:LATENT`, or just `image`); drag a node onto the canvas or click it.

import { useMemo, useState } from 'react';
import type { NodeSchema } from '../api/types';
import { LOOP_INPUT, LOOP_OUTPUT } from '../model/catalog';
import { loopOwner } from '../state/derived';
import { editor } from '../state/editor';
import { useEd } from '../state/hooks';
import { NODE_MIME } from './Canvas';

export function Palette() {
  const catalog = useEd((s) => s.catalog);
  const status = useEd((s) => s.catalogStatus);
  const owner = useEd(loopOwner);
  const [q, setQ] = useState('');
  const [closed, setClosed] = useState<Record<string, boolean>>({});
  const found = useMemo(() => {
    const list = q.trim() ? catalog.search(q) : catalog.list();
    if (owner) {
      for (const t of [LOOP_INPUT, LOOP_OUTPUT]) {
        const s = catalog.schemaFor(t, owner);
        if (s && (!q.trim() || s.display_name.toLowerCase().includes(q.toLowerCase()))) list.unshift(s);
      }
    }
    return list;
  }, [catalog, q, owner]);
  const byCat = useMemo(() => {
    const m = new Map<string, NodeSchema[]>();
    for (const s of found) {
      const top = s.category || 'misc';
      if (!m.has(top)) m.set(top, []);
      m.get(top)!.push(s);
    }
    return m;
  }, [found]);
  return (
    <aside className="ll-palette" aria-label="Node palette">
      <div className="ll-palette-search">
        <input
          type="search"
          placeholder="Search nodes, categories, types…"
          aria-label="Search nodes"
          value={q}
          onChange={(e) => setQ(e.target.value)}
          onKeyDown={(e) => e.stopPropagation()}
        />
        <div className="ll-palette-tip">Try <code>image</code>, <code>in:IMAGE</code>, <code>out:MASK</code></div>
      </div>
      <div className="ll-palette-list">
        {status === 'loading' ? <div className="ll-empty">Loading the node catalog…</div> : null}
        {status === 'error' ? <div className="ll-empty">The catalog could not be loaded.</div> : null}
        {status === 'ready' && !found.length ? <div className="ll-empty">No node matches “{q}”.</div> : null}
        {[...byCat.entries()].map(([cat, list]) => (
          <section key={cat} className="ll-cat">
            <button type="button" className="ll-cat-title" onClick={() => setClosed({ ...closed, [cat]: !closed[cat] })}>
              <span>{closed[cat] && !q ? '▸' : '▾'}</span> {cat}
              <span className="ll-count">{list.length}</span>
            </button>
            {closed[cat] && !q ? null : (
              <ul>
                {list.map((s) => (
                  <PaletteItem key={s.name} s={s} />
                ))}
              </ul>
            )}
          </section>
        ))}
      </div>
    </aside>
  );
}

function PaletteItem({ s }: { s: NodeSchema }) {
  const types = useEd((st) => st.catalog.types);
  const sockets = [...new Set([...s.inputs.filter((i) => i.link_only).map((i) => i.type), ...s.outputs.map((o) => o.type)])];
  return (
    <li
      className="ll-pal-item"
      draggable
      data-node-type={s.name}
      title={s.description || s.name}
      onDragStart={(e) => {
        e.dataTransfer.setData(NODE_MIME, s.name);
        e.dataTransfer.effectAllowed = 'copy';
      }}
      onClick={() => {
        const c = editor.viewCenter();
        editor.addNode(s.name, c);
      }}
    >
      <span className="ll-pal-name">{s.display_name}</span>
      <span className="ll-pal-dots">
        {sockets.slice(0, 5).map((t) => (
          <i key={t} style={{ background: types.color(t) }} title={t} />
        ))}
      </span>
    </li>
  );
}
