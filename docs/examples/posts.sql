CREATE TABLE posts (
    id serial PRIMARY KEY,
    title text NOT NULL,
    status text NOT NULL DEFAULT 'draft',
    price numeric(10,2),
    deleted_at timestamptz
);
