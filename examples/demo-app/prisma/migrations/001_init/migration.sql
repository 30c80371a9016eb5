create table if not exists messages (id serial primary key, body text not null);
