/**
 * The session settings under which Warden reads SQL text the way the server does. The statements that
 * change them are refused by policy (risk `lexical_setting`); this is the second line: whatever the server
 * reports through ParameterStatus at login (a role or database default, a startup option) and afterwards
 * (a function that changed it) is checked, and a session in an unsafe state is ended.
 *
 * @see https://www.postgresql.org/docs/current/multibyte.html#MULTIBYTE-CHARSET-SUPPORTED (client-only encodings)
 */

/**
 * Client-only encodings whose multi-byte characters may end in an ASCII byte such as `\` or `'`
 * (names as PostgreSQL's clean_encoding_name leaves them, aliases included).
 */
const UNSAFE_CLIENT_ENCODINGS = new Set([
  'sjis', 'shiftjis', 'mskanji', 'win932', 'windows932', 'cp932',
  'big5', 'win950', 'windows950', 'cp950',
  'gbk', 'win936', 'windows936', 'cp936',
  'uhc', 'win949', 'windows949', 'cp949',
  'gb18030', 'johab', 'shiftjis2004',
]);

/** Why a reported setting makes SQL text ambiguous to Warden, or undefined when it is safe. */
export function unsafeSetting(name: string, value: string): string | undefined {
  switch (name.toLowerCase()) {
    case 'standard_conforming_strings':
      return value.toLowerCase() === 'on' ? undefined : 'standard_conforming_strings is off';
    case 'client_encoding':
      return UNSAFE_CLIENT_ENCODINGS.has(value.toLowerCase().replace(/[^a-z0-9]/g, '')) ? `client_encoding ${value} is not supported` : undefined;
    default:
      return undefined;
  }
}

/** The same check on a raw ParameterStatus body (name\0value\0). */
export function unsafeParameterStatus(body: Buffer): string | undefined {
  const nul = body.indexOf(0);
  if (nul < 0) return undefined;
  const end = body.indexOf(0, nul + 1);
  return unsafeSetting(body.toString('utf8', 0, nul), body.toString('utf8', nul + 1, end < 0 ? body.length : end));
}
