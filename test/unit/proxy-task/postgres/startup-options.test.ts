import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setsForbiddenSetting, settingsInOptions } from '../../../../proxy-task/src/postgres/startup-options.ts';

test('reads settings from options the way the server does', () => {
  assert.deepEqual(settingsInOptions('-c statement_timeout=5s -c search_path=app'), ['statement_timeout', 'search_path']);
  assert.deepEqual(settingsInOptions('--work-mem=64MB'), ['work_mem']);
  assert.deepEqual(settingsInOptions('-cgeqo=off'), ['geqo']);
  assert.deepEqual(settingsInOptions('-ec role=x'), ['role'], 'grouped flags');
  assert.deepEqual(settingsInOptions('-c rol\\e=x'), ['role'], 'a backslash escapes any character');
  assert.deepEqual(settingsInOptions('-c\\ role=x'), [' role'], 'an escaped space belongs to the argument');
  assert.deepEqual(settingsInOptions('   '), []);
});

test('refuses role and session_authorization in every spelling, as a parameter or in options', () => {
  const refused = ['-c role=postgres', '-c ROLE=postgres', '--role=postgres', '-c session-authorization=x', '-ec role=x', '-c rol\\e=x', '-\\-role=x', '-c\trole=x'];
  for (const options of refused) assert.equal(setsForbiddenSetting(new Map([['options', options]])), true, options);
  assert.equal(setsForbiddenSetting(new Map([['Role', 'postgres']])), true, 'a startup parameter');
  assert.equal(setsForbiddenSetting(new Map([['session_authorization', 'postgres']])), true);
  assert.equal(setsForbiddenSetting(new Map([['options', '-c application_name=role'], ['application_name', 'role=x']])), false);
});
