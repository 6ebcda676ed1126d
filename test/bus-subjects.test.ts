import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { subjects, checkDevice, InvalidSubjectToken } from '../src/bus/subjects.ts';

test('bus subjects: whatever an identity sends goes out under charon.<run>.from.<me>.', () => {
  const s = subjects('run-7', 'jetson-2');
  assert.is(s.own, 'charon.run-7.from.jetson-2.');
  assert.is(s.coordJoin(), 'charon.run-7.from.jetson-2.to.coordinator.join');
  assert.is(s.coordStatus(), 'charon.run-7.from.jetson-2.to.coordinator.status');
  assert.is(s.devHb(), 'charon.run-7.from.jetson-2.hb');
  assert.is(s.stageFwd('d1', 2, 0), 'charon.run-7.from.jetson-2.to.d1.fwd.2.0');
  assert.is(s.stageBwd('d0', 1, 3), 'charon.run-7.from.jetson-2.to.d0.bwd.1.3');
  assert.is(s.grad('d3', 0, 41), 'charon.run-7.from.jetson-2.to.d3.grad.0.41');
  assert.is(s.grad('d3', 'g1', 41), 'charon.run-7.from.jetson-2.to.d3.grad.g1.41');
  assert.is(s.cachePut('d1'), 'charon.run-7.from.jetson-2.to.d1.cache.put');
  assert.is(s.events(), 'charon.run-7.from.jetson-2.events');
  assert.is(s.inbox(), 'charon.run-7.inbox.jetson-2');
  for (const subject of [s.coordJoin(), s.devHb(), s.stageFwd('d1', 0, 0), s.grad('x', 'g', 1), s.events()])
    assert.ok(subject.startsWith(s.own), subject);
});

test('bus subjects: receivers listen to messages addressed to them; control only from the coordinator', () => {
  const s = subjects('r', 'd1');
  assert.is(s.stageFwdIn(2, 0), 'charon.r.from.*.to.d1.fwd.2.0');
  assert.is(s.stageBwdIn(1, 3), 'charon.r.from.*.to.d1.bwd.1.3');
  assert.is(s.gradIn('all', 5), 'charon.r.from.*.to.d1.grad.all.5');
  assert.is(s.cachePutIn(), 'charon.r.from.*.to.d1.cache.put');
  assert.is(s.devCtlIn(), 'charon.r.from.coordinator.to.d1.ctl');
  const c = subjects('r', 'coordinator');
  assert.is(c.devCtl('d1'), s.devCtlIn());
  assert.is(c.coordJoinIn(), 'charon.r.from.*.to.coordinator.join');
  assert.is(c.coordStatusIn(), 'charon.r.from.*.to.coordinator.status');
  assert.is(c.devHbAll(), 'charon.r.from.*.hb');
  assert.is(c.eventsAll(), 'charon.r.from.*.events');
});

test('bus subjects: the sender is read from the subject', () => {
  const s = subjects('r', 'd1');
  assert.is(s.senderOf(subjects('r', 'd0').stageFwd('d1', 1, 0)), 'd0');
  assert.is(s.senderOf('charon.r.from.coordinator.to.d1.ctl'), 'coordinator');
  assert.is(s.senderOf('charon.other.from.d0.hb'), undefined, 'another run');
  assert.is(s.senderOf('charon.r.inbox.d1.x.1'), undefined);
  assert.is(s.senderOf('charon.r.from.'), undefined);
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
  rejectsToken(() => subjects('a.b', 'd'), 'a.b', /run .*a dot/);
  rejectsToken(() => subjects('r', 'dev*'), 'dev*', /identity .*wildcard/);
  rejectsToken(() => subjects('r', 'd').devCtl('>'), '>', /wildcard/);
  rejectsToken(() => subjects('r', 'd').cachePut('my dev'), 'my dev', /whitespace/);
  rejectsToken(() => subjects('r', 'd').stageFwd('', 0, 0), '', /empty/);
  rejectsToken(() => subjects('r', 'd').stageFwdIn(-1, 0), '-1', /stage/);
  rejectsToken(() => subjects('r', 'd').stageBwd('x', 0, 1.5), '1.5', /rank/);
  rejectsToken(() => subjects('r', 'd').gradIn('g.1', 0), 'g.1', /group/);
  rejectsToken(() => subjects('x'.repeat(65), 'd'), 'x'.repeat(65), /longer/);
  rejectsToken(() => checkDevice('coordinator'), 'coordinator', /reserved/);
});

test.run();
