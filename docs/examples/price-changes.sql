INSERT INTO posts (title, price) VALUES ('Gone', 5), ('Book', 9.99);
UPDATE posts SET deleted_at = now() WHERE title = 'Gone';
UPDATE posts SET title = 'A book';                  -- no column of --fields changes
UPDATE posts SET price = price + 0.01;              -- 'Gone' is deleted: only 'A book'
