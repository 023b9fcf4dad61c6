// Widgets for literal inputs, chosen from the input's schema: numbers (range, step, slider), combos,
// booleans, text (multiline), seeds (fixed / increment / randomize) and image upload with a preview.

import { useEffect, useRef, useState } from 'react';
import { api, viewUrl } from '../api/client';
import type { InputSchema } from '../api/types';
import { editor } from '../state/editor';

interface WidgetProps {
  nodeId: string;
  input: InputSchema;
  value: unknown;
  seedMode?: string;
}

const stop = (e: React.SyntheticEvent) => e.stopPropagation();

export function Widget(p: WidgetProps) {
  const { input } = p;
  let w: React.ReactNode;
  if (input.upload) w = <UploadWidget {...p} />;
  else if (input.choices && input.choices.length) w = <ComboWidget {...p} />;
  else if (input.type === 'BOOLEAN') w = <BoolWidget {...p} />;
  else if (input.type === 'INT' || input.type === 'FLOAT') w = input.seed ? <SeedWidget {...p} /> : <NumberWidget {...p} />;
  else if (input.type === 'STRING') w = <TextWidget {...p} />;
  else w = <JsonWidget {...p} />;
  return (
    <div className="ll-widget nodrag nowheel nopan" onKeyDown={stop} onDoubleClick={stop}>
      {w}
    </div>
  );
}

function label(i: InputSchema): string {
  return i.display_name || i.name;
}

function set(p: WidgetProps, v: unknown) {
  editor.setValue(p.nodeId, p.input.name, v);
}

function decimals(step: number): number {
  const s = String(step);
  return s.includes('.') ? s.length - s.indexOf('.') - 1 : 0;
}

function NumberWidget(p: WidgetProps) {
  const { input } = p;
  const isInt = input.type === 'INT';
  const step = input.step ?? (isInt ? 1 : 0.01);
  const num = typeof p.value === 'number' ? p.value : Number(p.value ?? 0);
  const [text, setText] = useState(String(num));
  const [focus, setFocus] = useState(false);
  useEffect(() => {
    if (!focus) setText(String(num));
  }, [num, focus]);
  const clamp = (v: number) => {
    if (input.min !== null && v < input.min) v = input.min;
    if (input.max !== null && v > input.max) v = input.max;
    return isInt ? Math.round(v) : Number(v.toFixed(Math.max(decimals(step), 6)));
  };
  const commit = (raw: string) => {
    setText(raw);
    const v = Number(raw);
    if (raw.trim() !== '' && Number.isFinite(v)) set(p, isInt ? Math.round(v) : v);
  };
  const nudge = (dir: number) => set(p, clamp(Number((num + dir * step).toFixed(Math.max(decimals(step), 0)))));
  const range = input.min !== null && input.max !== null;
  return (
    <label className={'ll-num' + (input.slider && range ? ' ll-num-slider' : '')} title={input.description || undefined}>
      <span className="ll-wlabel">{label(input)}</span>
      {input.slider && range ? (
        <input
          type="range"
          min={input.min!}
          max={input.max!}
          step={step}
          value={num}
          onChange={(e) => set(p, clamp(Number(e.target.value)))}
          onPointerUp={() => editor.sealUndo()}
        />
      ) : null}
      <span className="ll-num-box">
        <button type="button" className="ll-num-btn" tabIndex={-1} onClick={() => nudge(-1)} aria-label="decrease">‹</button>
        <input
          type="text"
          inputMode={isInt ? 'numeric' : 'decimal'}
          aria-label={input.name}
          data-input={input.name}
          value={focus ? text : String(num)}
          onFocus={() => setFocus(true)}
          onBlur={() => {
            setFocus(false);
            const v = Number(text);
            if (Number.isFinite(v) && text.trim() !== '') {
              const c = clamp(v);
              if (c !== num) set(p, c);
            }
            editor.sealUndo();
          }}
          onChange={(e) => commit(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === 'ArrowUp') { e.preventDefault(); nudge(1); }
            else if (e.key === 'ArrowDown') { e.preventDefault(); nudge(-1); }
            else if (e.key === 'Enter') (e.target as HTMLInputElement).blur();
          }}
        />
        <button type="button" className="ll-num-btn" tabIndex={-1} onClick={() => nudge(1)} aria-label="increase">›</button>
      </span>
    </label>
  );
}

const SEED_MODES = ['fixed', 'increment', 'decrement', 'randomize'];

function SeedWidget(p: WidgetProps) {
  const mode = p.seedMode ?? 'fixed';
  const max = Math.min(p.input.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const setMode = (m: string) => {
    const n = editor.graph.nodes[p.nodeId];
    if (!n) return;
    editor.setNodeUi(p.nodeId, 'seed_control', { ...((n.ui.seed_control as object) ?? {}), [p.input.name]: m }, 'Seed control');
  };
  return (
    <div className="ll-seed">
      <NumberWidget {...p} />
      <div className="ll-seed-row">
        <select aria-label={`${p.input.name} after each run`} value={mode} onChange={(e) => setMode(e.target.value)} title="What happens to the seed after each run">
          {SEED_MODES.map((m) => (
            <option key={m} value={m}>{m === 'fixed' ? 'fixed' : `${m} after each run`}</option>
          ))}
        </select>
        <button type="button" className="ll-btn ll-btn-small" title="New random seed" onClick={() => set(p, Math.floor(Math.random() * Math.min(max, 2 ** 50)))}>
          random
        </button>
      </div>
    </div>
  );
}

function ComboWidget(p: WidgetProps) {
  const choices = p.input.choices ?? [];
  const missing = p.value !== undefined && !choices.some((c) => c === p.value);
  const idx = choices.findIndex((c) => c === p.value);
  return (
    <label className="ll-combo" title={p.input.description || undefined}>
      <span className="ll-wlabel">{label(p.input)}</span>
      <select
        aria-label={p.input.name}
        data-input={p.input.name}
        value={missing ? '__missing__' : String(idx)}
        onChange={(e) => e.target.value !== '__missing__' && set(p, choices[Number(e.target.value)])}
        className={missing ? 'll-missing' : undefined}
      >
        {missing ? <option value="__missing__">{String(p.value)} (missing)</option> : null}
        {choices.map((c, i) => (
          <option key={i} value={String(i)}>{String(c)}</option>
        ))}
      </select>
    </label>
  );
}

function BoolWidget(p: WidgetProps) {
  const on = p.value === true;
  return (
    <label className="ll-bool" title={p.input.description || undefined}>
      <span className="ll-wlabel">{label(p.input)}</span>
      <button
        type="button"
        role="switch"
        aria-checked={on}
        aria-label={p.input.name}
        data-input={p.input.name}
        className={'ll-switch' + (on ? ' on' : '')}
        onClick={() => set(p, !on)}
      >
        <span />
      </button>
    </label>
  );
}

function TextWidget(p: WidgetProps) {
  const v = typeof p.value === 'string' ? p.value : p.value === undefined || p.value === null ? '' : String(p.value);
  if (p.input.multiline) {
    return (
      <label className="ll-text ll-text-multi" title={p.input.description || undefined}>
        <span className="ll-wlabel">{label(p.input)}</span>
        <textarea
          aria-label={p.input.name}
          data-input={p.input.name}
          value={v}
          rows={3}
          placeholder={label(p.input)}
          onChange={(e) => set(p, e.target.value)}
          onBlur={() => editor.sealUndo()}
        />
      </label>
    );
  }
  return (
    <label className="ll-text" title={p.input.description || undefined}>
      <span className="ll-wlabel">{label(p.input)}</span>
      <input type="text" aria-label={p.input.name} data-input={p.input.name} value={v} onChange={(e) => set(p, e.target.value)} onBlur={() => editor.sealUndo()} />
    </label>
  );
}

function JsonWidget(p: WidgetProps) {
  const [text, setText] = useState(() => JSON.stringify(p.value ?? null));
  const [bad, setBad] = useState(false);
  return (
    <label className="ll-text" title={`${p.input.type} value as JSON`}>
      <span className="ll-wlabel">{label(p.input)}</span>
      <input
        type="text"
        aria-label={p.input.name}
        className={bad ? 'll-missing' : undefined}
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          try {
            set(p, JSON.parse(e.target.value));
            setBad(false);
          } catch {
            setBad(true);
          }
        }}
      />
    </label>
  );
}

function UploadWidget(p: WidgetProps) {
  const file = useRef<HTMLInputElement>(null);
  const [busy, setBusy] = useState(false);
  const name = typeof p.value === 'string' ? p.value : '';
  const upload = async (f: File) => {
    setBusy(true);
    try {
      const r = await api.upload(f, p.input.upload === 'mask' ? 'mask' : 'image');
      const value = r.subfolder ? `${r.subfolder}/${r.name}` : r.name;
      await editor.loadCatalog();
      set(p, value);
    } catch (e) {
      editor.toast('error', `Upload failed: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  const sub = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
  const fname = name.slice(name.lastIndexOf('/') + 1);
  return (
    <div className="ll-upload">
      <ComboWidget {...p} />
      <button type="button" className="ll-btn ll-btn-small ll-wide" disabled={busy} onClick={() => file.current?.click()}>
        {busy ? 'Uploading…' : 'Upload image…'}
      </button>
      <input
        ref={file}
        type="file"
        accept="image/*"
        hidden
        onChange={(e) => {
          const f = e.target.files?.[0];
          if (f) void upload(f);
          e.target.value = '';
        }}
      />
      {name ? (
        <img className="ll-upload-preview" alt={name} src={viewUrl({ filename: fname, subfolder: sub, type: 'input' })} draggable={false} />
      ) : null}
    </div>
  );
}
