INSERT INTO posts (title) VALUES ('One'), ('Two');
DELETE FROM posts WHERE title = 'One';
