// /docs: Swagger UI over /openapi.json, bundled from the swagger-ui-dist
// package so it works without internet.
import 'swagger-ui-dist/swagger-ui.css';
import SwaggerUI from 'swagger-ui-dist/swagger-ui-es-bundle.js';

SwaggerUI({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true });
