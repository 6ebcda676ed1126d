import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { subjects, InvalidSubjectToken } from '../src/bus/subjects.ts';

test('bus subjects: every subject of the design table lives under charon.<run>.', () => {
  const s = subjects('run-7');
  assert.is(s.coordJoin(), 'charon.run-7.coord.join');
  assert.is(s.devHb('jetson-2'), 'charon.run-7.dev.jetson-2.hb');
  assert.is(s.devHbAll(), 'charon.run-7.dev.*.hb');
  assert.is(s.devCtl('jetson_2'), 'charon.run-7.dev.jetson_2.ctl');
  assert.is(s.stageFwd(2, 0), 'charon.run-7.stage.2.0.fwd');
  assert.is(s.stageBwd(1, 3), 'charon.run-7.stage.1.3.bwd');
  assert.is(s.grad(0, 41), 'charon.run-7.grad.0.41');
  assert.is(s.grad('g1', 41), 'charon.run-7.grad.g1.41');
  assert.is(s.cacheGet('d1'), 'charon.run-7.cache.d1.get');
  assert.is(s.cachePut('d1'), 'charon.run-7.cache.d1.put');
  assert.is(s.events(), 'charon.run-7.events');
});

function rejectsToken(fn: () => unknown, token: string, what: RegExp): void {
  try {
    fn();
  } catch (err) {
    assert.instance(err, InvalidSubjectToken);
    assert.ok((err as Error).message.includes(`'${token}'`), (err as Error).message);
    assert.match((err as Error).message, what);
    return;
  }
  assert.unreachable(`token '${token}' was accepted`);
}

test('bus subjects: bad tokens are rejected and the error names the token', () => {
  rejectsToken(() => subjects('a.b'), 'a.b', /run .*a dot/);
  rejectsToken(() => subjects('r').devHb('dev*'), 'dev*', /device .*wildcard/);
  rejectsToken(() => subjects('r').devCtl('>'), '>', /wildcard/);
  rejectsToken(() => subjects('r').cacheGet('my dev'), 'my dev', /whitespace/);
  rejectsToken(() => subjects('r').cachePut(''), '', /empty/);
  rejectsToken(() => subjects('r').stageFwd(-1, 0), '-1', /stage/);
  rejectsToken(() => subjects('r').stageBwd(0, 1.5), '1.5', /rank/);
  rejectsToken(() => subjects('r').grad('g.1', 0), 'g.1', /group/);
  rejectsToken(() => subjects('x'.repeat(65)), 'x'.repeat(65), /longer/);
});

test.run();
