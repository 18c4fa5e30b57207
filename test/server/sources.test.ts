/** Per-source accounting (src/server/sources.ts): bounded, and a full table fails closed without throwing. */
import { describe, expect, it } from 'vitest';
import { SourceTable, sourceOf, LOCAL_SOURCE } from '../../src/server/sources.js';

describe('SourceTable', () => {
  it('beyond maxTrackedSources new sources share one overflow entry (no recursion, no throw)', () => {
    const t = new SourceTable(60, 2, () => 0);
    const a = t.entry('192.0.2.1');
    const b = t.entry('192.0.2.2');
    a.connections = 1;
    b.connections = 1;
    const c = t.entry('192.0.2.3');
    const d = t.entry('2001:db8::4');
    expect(c).toBe(d);
    expect(c).not.toBe(a);
    expect(t.size).toBe(2);
    c.connections = 5; // limited together
    expect(t.entry('192.0.2.5').connections).toBe(5);
  });

  it('a full table is swept for idle sources, at most once a second', () => {
    let now = 0;
    const t = new SourceTable(60, 1, () => now);
    const a = t.entry('192.0.2.1');
    a.connections = 1;
    const overflow = t.entry('192.0.2.2');
    a.connections = 0; // now idle, but the last sweep was just now
    expect(t.entry('192.0.2.3')).toBe(overflow);
    now += 1000;
    const fresh = t.entry('192.0.2.3');
    expect(fresh).not.toBe(overflow);
    expect(t.size).toBe(1);
  });

  it('sourceOf folds IPv4-mapped IPv6 and names address-less peers LOCAL_SOURCE', () => {
    expect(sourceOf('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(sourceOf('::1')).toBe('::1');
    expect(sourceOf(undefined)).toBe(LOCAL_SOURCE);
  });
});
