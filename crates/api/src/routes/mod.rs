pub mod functions;
pub mod sessions;
pub mod system;
