-- What each reconcile pass found and did (the reconciler writes; the admin API reads).
CREATE TABLE reconcile_reports (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL,
    clusters  integer NOT NULL,
    orphans   text[] NOT NULL DEFAULT '{}',
    lost      text[] NOT NULL DEFAULT '{}',
    retried   text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX reconcile_reports_at ON reconcile_reports (at DESC);
