/**
 * What a client may set through its StartupMessage. Warden logs in upstream as the target credential;
 * a client that could set `role` or `session_authorization` at startup would change who that is.
 */

/** GUCs a client may not set at startup (as a parameter or through `options`): they would change who Warden is upstream. */
const FORBIDDEN_SETTINGS = new Set(['role', 'session_authorization']);
/** Backend switches that take an argument: PostgreSQL's getopt string "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:". */
const SWITCHES_WITH_ARGUMENT = new Set('BcCDdfhkNprStvW-');

/**
 * Names of the settings a startup `options` string sets, read the way the server reads it: split at
 * whitespace where a backslash escapes any character (pg_split_opts), then getopt over the backend
 * switches, where `-c name=value` and `--name=value` set a setting, flags may be grouped (`-ec name=value`)
 * and `-` in a name means `_` (ParseLongOption). Names are lower-cased like the server's lookup.
 */
export function settingsInOptions(options: string): string[] {
  const args: string[] = [];
  let cur: string | undefined;
  let escaped = false;
  for (const ch of options) {
    if (!escaped && /[ \t\n\v\f\r]/.test(ch)) {
      if (cur !== undefined) args.push(cur);
      cur = undefined;
      continue;
    }
    cur ??= '';
    if (!escaped && ch === '\\') escaped = true;
    else {
      escaped = false;
      cur += ch;
    }
  }
  if (cur !== undefined) args.push(cur);
  const names: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.length < 2 || a[0] !== '-') continue;
    for (let k = 1; k < a.length; k++) {
      const flag = a[k]!;
      if (!SWITCHES_WITH_ARGUMENT.has(flag)) continue;
      const value = k + 1 < a.length ? a.slice(k + 1) : (args[++i] ?? '');
      if (flag === 'c' || flag === '-') names.push(value.split('=')[0]!.replace(/-/g, '_').toLowerCase());
      break;
    }
  }
  return names;
}

/** True when the startup parameters, or the settings inside `options`, set a forbidden setting. */
export function setsForbiddenSetting(parameters: ReadonlyMap<string, string>): boolean {
  const names = [...[...parameters.keys()].map((k) => k.toLowerCase()), ...settingsInOptions(parameters.get('options') ?? '')];
  return names.some((name) => FORBIDDEN_SETTINGS.has(name));
}
