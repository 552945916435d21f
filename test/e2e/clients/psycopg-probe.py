"""Runs a fixed psycopg2 workload and prints its results as JSON (used by psycopg.test.ts).

Usage: python3 psycopg-probe.py  (connection from the libpq environment: PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE, PGSSLMODE). Everything printed is deterministic for a given database state.
"""
import datetime
import decimal
import io
import json
import sys
import uuid

import psycopg2
import psycopg2.extras


def plain(v):
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, decimal.Decimal):
        return 'dec:' + str(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        return 'td:' + str(v.total_seconds())
    if isinstance(v, (memoryview, bytes, bytearray)):
        return 'hex:' + bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return 'uuid:' + str(v)
    return v


def main():
    psycopg2.extras.register_uuid()
    out = {}
    conn = psycopg2.connect('application_name=psycopg-probe')
    out['server_version'] = conn.server_version // 10000

    cur = conn.cursor()
    cur.execute('drop table if exists py_items')
    cur.execute('create table py_items (id int primary key, name text, price numeric(10, 2), tags text[], data bytea)')
    conn.commit()

    # executemany: one INSERT per row, parameters interpolated client-side.
    rows = [(i, 'item %d' % i, decimal.Decimal(i) / 4, ['t%d' % (i % 3), 'x'], None) for i in range(1, 21)]
    cur.executemany('insert into py_items (id, name, price, tags, data) values (%s, %s, %s, %s, %s)', rows)
    out['executemany_rowcount'] = cur.rowcount
    conn.commit()

    # A bytea parameter (psycopg2.Binary), with bytes that need escaping.
    blob = bytes(range(256)) * 4
    cur.execute('update py_items set data = %s where id = %s returning id, length(data), md5(data)', (psycopg2.Binary(blob), 7))
    out['bytea_update'] = plain(cur.fetchall())
    cur.execute('select data from py_items where id = 7')
    out['bytea_roundtrip'] = bytes(cur.fetchone()[0]) == blob
    conn.commit()

    # COPY FROM STDIN (copy_expert) and COPY TO STDOUT.
    csv_in = io.StringIO(''.join('%d,"copied, %d",%s,"{a,b}",\n' % (i, i, i * 1.5) for i in range(100, 1100)))
    cur.copy_expert('copy py_items (id, name, price, tags, data) from stdin with (format csv)', csv_in)
    out['copy_in_rowcount'] = cur.rowcount
    conn.commit()
    csv_out = io.StringIO()
    cur.copy_expert('copy (select id, name, price, tags from py_items where id % 97 = 0 order by id) to stdout with (format csv, header)', csv_out)
    out['copy_out'] = csv_out.getvalue()
    conn.commit()

    # A server-side (named) cursor: DECLARE ... then FETCH FORWARD itersize.
    named = conn.cursor(name='py_big')
    named.itersize = 250
    named.execute('select g, md5(g::text), g * 0.5 from generate_series(1, 3000) g')
    n, total, digest = 0, decimal.Decimal(0), []
    for row in named:
        n += 1
        total += row[2]
        if row[0] % 1000 == 0:
            digest.append(plain(row))
    named.close()
    out['named_cursor'] = {'rows': n, 'sum': str(total), 'samples': digest}
    conn.commit()

    # A transaction: commit one change, roll another back, and an error with its SQLSTATE.
    cur.execute('update py_items set price = price + 1 where id <= 5')
    out['tx_update'] = cur.rowcount
    conn.commit()
    cur.execute('delete from py_items where id > 5')
    out['tx_delete'] = cur.rowcount
    conn.rollback()
    try:
        cur.execute('insert into py_items (id, name) values (%s, %s)', (1, 'duplicate'))
        out['dup'] = 'no error'
    except psycopg2.Error as e:
        out['dup'] = [e.pgcode, e.pgerror.splitlines()[0], e.diag.message_detail]
        conn.rollback()
    cur.execute('select count(*), sum(price), min(name), max(array_length(tags, 1)) from py_items')
    out['after_tx'] = plain(cur.fetchone())

    # Types through the simple protocol.
    cur.execute(
        "select 1::int2, 2::int8, 3.25::float8, 'x'::char(3), '2024-02-29'::date, '12:34:56'::time, "
        "'2021-06-01 01:02:03.456+02'::timestamptz at time zone 'UTC', interval '1 day 01:00', "
        "'{\"k\": [1, 2, {\"z\": null}]}'::jsonb, array[1.5, null, 2]::numeric[], "
        "'b2a4c1f0-1234-4abc-8def-000000000001'::uuid, true, null, %s::text, %s",
        ("quote ' and backslash \\", [1, 2, 3]),
    )
    out['types'] = plain(cur.fetchone())
    out['columns'] = [(d.name, d.type_code) for d in cur.description]

    # Notices.
    conn.notices.clear()
    cur.execute("do $$ begin raise notice 'psycopg notice %', 1; end $$")
    out['notices'] = [x.strip() for x in conn.notices]
    conn.commit()

    # Autocommit mode.
    conn.autocommit = True
    cur.execute('select pg_catalog.current_setting(%s)', ('application_name',))
    out['autocommit'] = cur.fetchone()
    cur.execute('drop table py_items')
    conn.close()
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
