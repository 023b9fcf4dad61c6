import { describe, expect, it } from 'vitest';
import { TypeTable } from '../src/model/sockets';
import { catalog } from './fixtures';

const t = new TypeTable(catalog.types);

describe('connection rule (same as engine/types.py can_connect)', () => {
  it('accepts the same type', () => {
    expect(t.canConnect('IMAGE', 'IMAGE')).toBe(true);
    expect(t.canConnect('LATENT', 'LATENT')).toBe(true);
  });
  it('refuses different types', () => {
    expect(t.canConnect('IMAGE', 'MASK')).toBe(false);
    expect(t.canConnect('MASK', 'IMAGE')).toBe(false);
    expect(t.canConnect('STRING', 'INT')).toBe(false);
  });
  it('accepts ANY on either side', () => {
    expect(t.canConnect('*', 'IMAGE')).toBe(true);
    expect(t.canConnect('LATENT', '*')).toBe(true);
    expect(t.canConnect('*', '*')).toBe(true);
  });
  it('widens INT into FLOAT, never the reverse', () => {
    expect(t.canConnect('INT', 'FLOAT')).toBe(true);
    expect(t.canConnect('FLOAT', 'INT')).toBe(false);
  });
  it('lets a sub-type feed its super-types, transitively, never the reverse', () => {
    expect(t.canConnect('INPAINT_UNET', 'UNET')).toBe(true);
    expect(t.canConnect('SDXL_INPAINT_UNET', 'UNET')).toBe(true);
    expect(t.canConnect('SDXL_INPAINT_UNET', 'INPAINT_UNET')).toBe(true);
    expect(t.canConnect('UNET', 'INPAINT_UNET')).toBe(false);
  });
  it('treats unknown types by name only', () => {
    expect(t.canConnect('FOO', 'FOO')).toBe(true);
    expect(t.canConnect('FOO', 'BAR')).toBe(false);
  });
  it('explains a refusal', () => {
    expect(t.refusal('IMAGE', 'IMAGE')).toBeNull();
    expect(t.refusal('IMAGE', 'MASK')).toMatch(/IMAGE cannot feed MASK/);
    expect(t.refusal('FLOAT', 'INT')).toMatch(/INT into FLOAT works/);
    expect(t.refusal('INPAINT_UNET', 'LATENT')).toMatch(/also usable as UNET/);
  });
  it('gives colours from the table, grey for unknown types', () => {
    expect(t.color('IMAGE')).toBe('#64b5f6');
    expect(t.color('NOPE')).toBe('#9e9e9e');
  });
});
