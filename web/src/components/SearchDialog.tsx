// The quick search box (double-click the canvas, or drop a link on empty space): type, pick, place.

import { useEffect, useMemo, useRef, useState } from 'react';
import type { NodeSchema } from '../api/types';
import { LOOP_INPUT, LOOP_OUTPUT } from '../model/catalog';
import { loopOwner } from '../state/derived';
import { type Dialog, editor } from '../state/editor';
import { useEd } from '../state/hooks';

export function SearchDialog({ d }: { d: Extract<Dialog, { kind: 'search' }> }) {
  const catalog = useEd((s) => s.catalog);
  const owner = useEd(loopOwner);
  const [q, setQ] = useState('');
  const [idx, setIdx] = useState(0);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);
  const results = useMemo(() => {
    let list: NodeSchema[] = catalog.search(q);
    if (owner) {
      for (const t of [LOOP_INPUT, LOOP_OUTPUT]) {
        const s = catalog.schemaFor(t, owner);
        if (s && (!q || s.display_name.toLowerCase().includes(q.toLowerCase()))) list = [s, ...list];
      }
    }
    if (d.from) {
      const t = d.from.type;
      list = list.filter((s) =>
        d.from!.dir === 'source'
          ? s.inputs.some((i) => catalog.types.canConnect(t, i.type))
          : s.outputs.some((o) => catalog.types.canConnect(o.type, t)),
      );
    }
    return list.slice(0, 40);
  }, [catalog, q, d.from, owner]);
  const pick = (s: NodeSchema) => {
    editor.openDialog(null);
    const id = editor.addNode(s.name, d.flow);
    if (!id || !d.from) return;
    const f = d.from;
    const ns = catalog.schemaFor(s.name, owner);
    if (!ns) return;
    if (f.dir === 'source') {
      const i = ns.inputs.find((x) => catalog.types.canConnect(f.type, x.type));
      if (i) editor.connect(f.node, f.handle.slice(4), id, i.name);
    } else {
      const o = ns.outputs.find((x) => catalog.types.canConnect(x.type, f.type));
      if (o) editor.connect(id, o.name, f.node, f.handle.slice(3));
    }
  };
  const left = Math.min(d.screen[0], window.innerWidth - 340);
  const top = Math.min(d.screen[1], window.innerHeight - 360);
  return (
    <div className="ll-overlay ll-overlay-clear" onMouseDown={() => editor.openDialog(null)}>
      <div className="ll-search" style={{ left, top }} onMouseDown={(e) => e.stopPropagation()} role="dialog" aria-label="Add a node">
        <input
          ref={input}
          placeholder={d.from ? `Nodes that take ${d.from.type}…` : 'Add a node…'}
          aria-label="Node search"
          value={q}
          onChange={(e) => { setQ(e.target.value); setIdx(0); }}
          onKeyDown={(e) => {
            e.stopPropagation();
            if (e.key === 'ArrowDown') { e.preventDefault(); setIdx((i) => Math.min(results.length - 1, i + 1)); }
            else if (e.key === 'ArrowUp') { e.preventDefault(); setIdx((i) => Math.max(0, i - 1)); }
            else if (e.key === 'Enter' && results[idx]) pick(results[idx]);
            else if (e.key === 'Escape') editor.openDialog(null);
          }}
        />
        <ul>
          {results.map((s, i) => (
            <li key={s.name} className={i === idx ? 'active' : ''} onMouseEnter={() => setIdx(i)} onClick={() => pick(s)}>
              <span>{s.display_name}</span>
              <small>{s.category}</small>
            </li>
          ))}
          {!results.length ? <li className="ll-empty">Nothing matches</li> : null}
        </ul>
      </div>
    </div>
  );
}
