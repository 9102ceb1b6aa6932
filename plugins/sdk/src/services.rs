//! Services shared between the kernel and plugins, looked up by type.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;

#[derive(Default)]
pub struct Services {
    map: HashMap<TypeId, (Box<dyn Any + Send + Sync>, &'static str)>,
}

impl Services {
    /// Adds a service; a second provider of the same type is refused with the first one's name.
    pub fn provide<T: Clone + Send + Sync + 'static>(
        &mut self,
        value: T,
        by: &'static str,
    ) -> Result<(), &'static str> {
        if let Some((_, first)) = self.map.get(&TypeId::of::<T>()) {
            return Err(first);
        }
        self.map.insert(TypeId::of::<T>(), (Box::new(value), by));
        Ok(())
    }

    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|(v, _)| v.downcast_ref::<T>())
            .cloned()
    }

    pub fn require<T: Clone + Send + Sync + 'static>(&self) -> Result<T, String> {
        self.get::<T>()
            .ok_or_else(|| format!("service {} is not available", type_name::<T>()))
    }
}
