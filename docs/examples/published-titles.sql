INSERT INTO posts (title) VALUES ('Draft only');
INSERT INTO posts (title, status) VALUES ('Hello', 'published');
UPDATE posts SET status = 'published' WHERE title = 'Draft only';
